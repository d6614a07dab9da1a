"""pgjobs: a Postgres-native job queue. The job commits with your data; no broker."""

from pgjobs.admin import Admin, DedupKeyConflict, JobStateError, QueueNotFound
from pgjobs.app import App
from pgjobs.backoff import Backoff
from pgjobs.clock import Clock, FrozenClock, SystemClock
from pgjobs.context import current_job
from pgjobs.cron import CronAdmin, Missed, ScheduleNotFound, TriggerRefused
from pgjobs.errors import (
    ConfigError,
    DatabaseError,
    Discard,
    InvalidInput,
    JobNotFound,
    JobTimeout,
    PgJobsError,
    Retry,
    SchemaError,
    UnknownTask,
)
from pgjobs.job import Job
from pgjobs.middleware import EnqueuedJob, JobOutcome, JobResult, Middleware
from pgjobs.states import JobState
from pgjobs.task import Task, TaskCall

__version__ = "0.1.0"

__all__ = [
    "Admin",
    "App",
    "Backoff",
    "Clock",
    "ConfigError",
    "CronAdmin",
    "DatabaseError",
    "DedupKeyConflict",
    "Discard",
    "EnqueuedJob",
    "FrozenClock",
    "InvalidInput",
    "Job",
    "JobNotFound",
    "JobOutcome",
    "JobResult",
    "JobState",
    "JobStateError",
    "JobTimeout",
    "Middleware",
    "Missed",
    "PgJobsError",
    "QueueNotFound",
    "Retry",
    "ScheduleNotFound",
    "SchemaError",
    "SystemClock",
    "Task",
    "TaskCall",
    "TriggerRefused",
    "UnknownTask",
    "current_job",
]
