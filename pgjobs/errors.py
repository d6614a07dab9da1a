"""Errors raised by pgjobs, and the two exceptions handlers raise to steer retries."""

from __future__ import annotations

import math
from datetime import timedelta


class PgJobsError(Exception):
    """Base class of every error pgjobs raises."""


class ConfigError(PgJobsError):
    """Invalid configuration: a bad DSN, option, task definition or schedule."""


class InvalidInput(PgJobsError, ValueError, TypeError):
    """A value given to enqueue is outside pgjobs' limits (see the README's "Input limits").

    Also a ValueError and a TypeError, which is what such mistakes raised before."""


class DatabaseError(PgJobsError):
    """Postgres could not be reached or refused an operation."""


class SchemaError(PgJobsError):
    """The pgjobs schema is missing or at another version than this code expects."""


class JobNotFound(PgJobsError):
    """No job has the given id."""


class UnknownTask(PgJobsError):
    """No task of that name is registered with the app."""


class JobTimeout(PgJobsError):
    """A handler ran longer than its task's timeout."""


class Retry(Exception):
    """Raise inside a handler to run the job again after `delay` (counts as an attempt)."""

    def __init__(self, delay: timedelta | float | None = None, reason: str = "retry requested"):
        seconds = delay.total_seconds() if isinstance(delay, timedelta) else delay
        if seconds is not None and seconds < 0:
            raise ValueError(f"Retry delay must not be negative, got {seconds}s")
        if seconds is not None and not math.isfinite(seconds):
            raise ValueError(f"Retry delay must be a finite number of seconds, got {seconds}")
        self.delay = seconds
        self.reason = reason
        super().__init__(reason if seconds is None else f"{reason} (in {seconds:g}s)")


class Discard(Exception):
    """Raise inside a handler to stop retrying: the job goes dead now with `reason`."""

    def __init__(self, reason: str = "discarded"):
        self.reason = reason
        super().__init__(reason)
