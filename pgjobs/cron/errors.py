"""Errors of the schedule admin API."""

from __future__ import annotations

from pgjobs.errors import PgJobsError


class ScheduleNotFound(PgJobsError):
    """No schedule has the given name."""


class TriggerRefused(PgJobsError):
    """A manual run was refused: the schedule was removed from code, or one of its runs is
    queued or running already (`active_job` is then that job's id; `force` overrides)."""

    def __init__(self, message: str, *, active_job: int | None = None):
        super().__init__(message)
        self.active_job = active_job
