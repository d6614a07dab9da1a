"""`pgjobs.current_job()`: the job the calling handler is running."""

from __future__ import annotations

from contextvars import ContextVar

from pgjobs.errors import PgJobsError
from pgjobs.job import Job

_current: ContextVar[Job | None] = ContextVar("pgjobs_current_job", default=None)


def current_job() -> Job:
    """The job being run by the calling handler (id, task, queue, attempt, enqueued_at...)."""
    job = _current.get()
    if job is None:
        raise PgJobsError("current_job() is only available inside a running job's handler")
    return job


def set_current(job: Job | None) -> None:
    _current.set(job)
