"""The job state machine, mirrored from the Postgres enum `job_state`.

    queued  -> running      a worker claims it (queued with run_at in the future = "scheduled")
    running -> succeeded    the handler returned
    running -> queued       failed with attempts left, worker lost, or handed back at shutdown
    running -> dead         attempts exhausted, `Discard`, or no handler after all attempts
    queued  -> cancelled    an operator cancelled it
    dead | cancelled -> queued   an operator retried it

queued and running jobs live in the hot table `jobs`; finished ones move to `job_history`.
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    DEAD = "dead"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.DEAD, JobState.CANCELLED)
