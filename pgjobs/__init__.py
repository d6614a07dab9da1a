"""pgjobs: a Postgres-native job queue. The job commits with your data; no broker."""

from pgjobs.app import App
from pgjobs.backoff import Backoff
from pgjobs.clock import Clock, FrozenClock, SystemClock
from pgjobs.context import current_job
from pgjobs.errors import (
    ConfigError,
    DatabaseError,
    Discard,
    JobNotFound,
    JobTimeout,
    PgJobsError,
    Retry,
    SchemaError,
    UnknownTask,
)
from pgjobs.job import Job
from pgjobs.states import JobState
from pgjobs.task import Task, TaskCall

__version__ = "0.1.0"

__all__ = [
    "App",
    "Backoff",
    "Clock",
    "ConfigError",
    "DatabaseError",
    "Discard",
    "FrozenClock",
    "Job",
    "JobNotFound",
    "JobState",
    "JobTimeout",
    "PgJobsError",
    "Retry",
    "SchemaError",
    "SystemClock",
    "Task",
    "TaskCall",
    "UnknownTask",
    "current_job",
]
