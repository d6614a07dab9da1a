"""What `pgjobs.admin` returns: plain dataclasses, mapped from rows with no I/O here."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pgjobs.states import JobState

_DURATION_PART = re.compile(r"(\d+)\s*(s|m|h|d|w)")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> timedelta:
    """A duration like "90s", "30m", "12h", "7d", "2w" or "1h30m" (ValueError otherwise)."""
    cleaned = text.strip().lower()
    parts = _DURATION_PART.findall(cleaned)
    if not cleaned or _DURATION_PART.sub("", cleaned).strip():
        raise ValueError(
            f"invalid duration {text!r}: use a number and a unit, like 30m, 12h or 7d "
            "(units: s, m, h, d, w)"
        )
    seconds = sum(int(number) * _UNITS[unit] for number, unit in parts)
    if seconds <= 0:
        raise ValueError(f"invalid duration {text!r}: it must be longer than zero")
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise ValueError(f"invalid duration {text!r}: too long") from None


def format_duration(value: timedelta | float | None) -> str:
    """Compact human form: 850ms, 12s, 3m05s, 2h10m, 3d04h ("-" for None)."""
    if value is None:
        return "-"
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    seconds = max(seconds, 0.0)
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


@dataclass(frozen=True)
class JobError:
    """One record of a job's `errors` list: a failed attempt, or an operator's retry."""

    attempt: int | None
    at: datetime | None
    kind: str
    error: str
    traceback: str | None = None
    worker_id: int | None = None


@dataclass(frozen=True)
class JobSummary:
    """A job as `jobs ls` lists it."""

    id: int
    task: str
    queue: str
    state: JobState
    priority: int
    attempt: int
    max_attempts: int | None
    run_at: datetime
    enqueued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    worker_id: int | None
    dedup_key: str | None
    last_error: str | None


@dataclass(frozen=True)
class JobDetail:
    """Everything about one job, as `jobs show` prints it."""

    id: int
    task: str
    queue: str
    state: JobState
    args: list[Any]
    kwargs: dict[str, Any]
    priority: int
    attempt: int
    max_attempts: int | None
    run_at: datetime
    enqueued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    worker_id: int | None
    dedup_key: str | None
    errors: list[JobError] = field(default_factory=list)


@dataclass(frozen=True)
class RetrySkip:
    """A job `retry` left alone: an unfinished job (`holder`) holds its dedup_key."""

    id: int
    holder: int


@dataclass(frozen=True)
class RetryReport:
    retried: list[int]
    skipped: list[RetrySkip]


@dataclass(frozen=True)
class QueueStats:
    """A row of the `queue_stats` view."""

    queue: str
    paused: bool
    queued: int  # eligible now
    scheduled: int  # queued with run_at in the future
    running: int
    oldest_queued_age: timedelta | None  # how long the oldest eligible job has waited
    succeeded_1h: int
    dead_1h: int
    cancelled_1h: int


@dataclass(frozen=True)
class TaskStats:
    """A row of `task_stats(span)`: the jobs of one task that finished within the span."""

    task: str
    finished: int
    succeeded: int
    dead: int
    cancelled: int
    per_second: float
    failure_rate: float | None  # dead / (succeeded + dead)
    retries: int  # attempts beyond the first
    p50_seconds: float | None
    p95_seconds: float | None
    p99_seconds: float | None
    max_seconds: float | None


@dataclass(frozen=True)
class WorkerStatus:
    """A row of the `worker_status` view."""

    id: int
    host: str
    pid: int
    queues: list[str] | None  # None: every queue
    concurrency: int
    running: int
    started_at: datetime
    heartbeat_at: datetime
    heartbeat_age: timedelta
    lost_at: datetime | None  # set while its session is gone (rescue follows the grace)
    # live: its lock held by its own session; lost: held by nobody; foreign: held by another
    # backend (a spoofer, or a stale one), which rescuers do not trust.
    session: str = "live"
    session_pid: int | None = None
    lock_holder_pid: int | None = None


@dataclass(frozen=True)
class RunningJob:
    """A row of the `running_jobs` view (host and pid are None once the worker is gone)."""

    id: int
    task: str
    queue: str
    attempt: int
    max_attempts: int | None
    worker_id: int | None
    host: str | None
    pid: int | None
    started_at: datetime | None
    runtime: timedelta | None


@dataclass(frozen=True)
class Stats:
    """One snapshot for the dashboard: queues, tasks over `period`, workers, running jobs."""

    taken_at: datetime
    period: timedelta
    queues: list[QueueStats]
    tasks: list[TaskStats]
    workers: list[WorkerStatus]
    running: list[RunningJob]  # the longest-running first, at most a few


def summary_from_row(row: Sequence[Any]) -> JobSummary:
    values = list(row)
    values[3] = JobState(values[3])
    return JobSummary(*values)


def detail_from_row(row: Sequence[Any]) -> JobDetail:
    """Map a `get_job` row (errors as decoded jsonb)."""
    (job_id, task, queue, args, kwargs, priority, state, attempt, max_attempts, run_at,
     enqueued_at, started_at, finished_at, worker_id, dedup_key, errors) = row  # fmt: skip
    return JobDetail(
        job_id,
        task,
        queue,
        JobState(state),
        _decoded(args),
        _decoded(kwargs),
        priority,
        attempt,
        max_attempts,
        run_at,
        enqueued_at,
        started_at,
        finished_at,
        worker_id,
        dedup_key,
        [error_from_record(item) for item in _decoded(errors) or []],
    )


def _decoded(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


def error_from_record(record: Any) -> JobError:
    """A JobError from one stored record, tolerating records of other versions."""
    if not isinstance(record, dict):
        return JobError(None, None, "unknown", str(record))
    attempt = record.get("attempt")
    worker_id = record.get("worker_id")
    traceback = record.get("traceback")
    return JobError(
        attempt=attempt if isinstance(attempt, int) else None,
        at=_timestamp(record.get("at")),
        kind=str(record.get("kind") or "unknown"),
        error=str(record.get("error") or ""),
        traceback=traceback if isinstance(traceback, str) else None,
        worker_id=worker_id if isinstance(worker_id, int) else None,
    )


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None
