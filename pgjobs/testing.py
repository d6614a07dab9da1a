"""Helpers for your own test suite: run jobs in-process, inspect and assert on enqueued jobs.

    from pgjobs.testing import assert_enqueued, drain

    def test_signup_sends_welcome_email(app):
        signup("a@b.c")
        assert_enqueued(app, send_email, to="a@b.c")
        assert drain(app).succeeded == 1

They talk to a real Postgres (the App's DSN), with the schema migrated. `FrozenClock` is
re-exported here: pass one as `App(clock=...)` and advance it to move the time the worker
and its services see (`pgjobs.FrozenClock.advance`); the database's own `now()` does not
move, so use `make_due` to run scheduled jobs (such as retries) at once.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pgjobs.app import App
from pgjobs.clock import FrozenClock
from pgjobs.errors import PgJobsError
from pgjobs.states import JobState
from pgjobs.task import Task, TaskCall

__all__ = [
    "DrainResult",
    "FrozenClock",
    "JobRecord",
    "assert_enqueued",
    "assert_not_enqueued",
    "drain",
    "drain_async",
    "enqueued_jobs",
    "job_arguments",
    "make_due",
]

TaskRef = str | Task[Any, Any] | TaskCall[Any, Any]


@dataclass(frozen=True)
class DrainResult:
    """What a drain ran. `retried` counts failed attempts that were scheduled again."""

    succeeded: int = 0
    retried: int = 0
    dead: int = 0

    @property
    def total(self) -> int:
        """Attempts run."""
        return self.succeeded + self.retried + self.dead


@dataclass(frozen=True)
class JobRecord:
    """A job as stored, in any state (queued and running jobs have no `finished_at`)."""

    id: int
    task: str
    queue: str
    args: list[Any]
    kwargs: dict[str, Any]
    priority: int
    state: JobState
    attempt: int
    max_attempts: int | None
    run_at: datetime
    enqueued_at: datetime
    finished_at: datetime | None
    dedup_key: str | None
    errors: list[dict[str, Any]]


def drain(app: App, *, queues: Iterable[str] | None = None, concurrency: int = 1) -> DrainResult:
    """Run every eligible job of `app` in this process until none is left; jobs that the
    handlers enqueue run too. Retries scheduled in the future are left queued (`make_due`)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(drain_async(app, queues=queues, concurrency=concurrency))
    raise RuntimeError("drain() cannot run inside an event loop: use `await drain_async(app)`")


async def drain_async(
    app: App, *, queues: Iterable[str] | None = None, concurrency: int = 1
) -> DrainResult:
    """`drain` for async tests: runs the worker on the calling event loop."""
    from pgjobs.worker import Worker, WorkerConfig

    config = WorkerConfig(
        queues=tuple(queues) if queues is not None else None,
        concurrency=concurrency,
        burst=True,
    )
    worker = Worker(app, config)
    await worker.run_async(install_signal_handlers=False)
    if worker.exit_code != 0:
        raise PgJobsError("drain: the worker stopped on an error (see the pgjobs.worker log)")
    session = getattr(worker, "session", None)
    worker_id = getattr(session, "worker_id", None)
    if worker_id is None:
        return DrainResult()
    return await asyncio.to_thread(_outcomes, app, worker_id)


def _outcomes(app: App, worker_id: int) -> DrainResult:
    database = app.database
    with database.errors(), database.pool().connection() as conn:
        rows = conn.execute(database.queries["testing_drain_outcomes"], {"workers": [worker_id]})
        counts = {outcome: int(count) for outcome, count in rows}
    dead = counts.get("dead", 0)
    return DrainResult(
        succeeded=counts.get("succeeded", 0),
        retried=counts.get("failed_attempts", 0) - dead,
        dead=dead,
    )


def _task_name(task: TaskRef | None) -> str | None:
    if isinstance(task, TaskCall):
        return task.task.name
    if isinstance(task, Task):
        return task.name
    return task


def enqueued_jobs(
    app: App,
    task: TaskRef | None = None,
    queue: str | None = None,
    state: JobState | str | None = JobState.QUEUED,
) -> list[JobRecord]:
    """Jobs of `app`, oldest first. `state=None` returns every state; "queued" includes
    jobs scheduled in the future. `task` is a Task or a task name."""
    if state is not None:
        state = JobState(state)
    params = {"task": _task_name(task), "queue": queue, "state": state}
    database = app.database
    with database.errors(), database.pool().connection() as conn:
        rows = conn.execute(database.queries["testing_jobs"], params).fetchall()
    return [_record(row) for row in rows]


def _record(row: tuple[Any, ...]) -> JobRecord:
    (job_id, task, queue, args, kwargs, priority, state, attempt, max_attempts, run_at,
     enqueued_at, finished_at, dedup_key, errors) = row  # fmt: skip
    return JobRecord(
        job_id,
        task,
        queue,
        args,
        kwargs,
        priority,
        JobState(state),
        attempt,
        max_attempts,
        run_at,
        enqueued_at,
        finished_at,
        dedup_key,
        errors,
    )


def make_due(app: App, task: TaskRef | None = None, queue: str | None = None) -> int:
    """Make scheduled jobs (future `run_at`, e.g. waiting retries) eligible now; returns
    how many. Then `drain` runs them."""
    params = {"task": _task_name(task), "queue": queue}
    database = app.database
    with database.errors(), database.pool().connection() as conn:
        return conn.execute(database.queries["testing_make_due"], params).rowcount


def job_arguments(app: App, job: JobRecord) -> dict[str, Any]:
    """The job's arguments by parameter name, positional ones included, when its handler
    is registered on `app`; otherwise its keyword arguments."""
    task = app.tasks.get(job.task)
    signature = task.signature if task is not None else None
    if signature is None:
        return dict(job.kwargs)
    try:
        bound = signature.bind(*job.args, **job.kwargs)
    except TypeError:
        return dict(job.kwargs)
    named: dict[str, Any] = {}
    for name, value in bound.arguments.items():
        if signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
            named.update(value)
        else:
            named[name] = value
    return named


def _matches(app: App, job: JobRecord, expected: Mapping[str, Any]) -> bool:
    arguments = job_arguments(app, job)
    return all(key in arguments and arguments[key] == value for key, value in expected.items())


def assert_enqueued(app: App, task: TaskRef, /, **arguments: Any) -> JobRecord:
    """Assert that a queued job of `task` has (at least) these arguments; returns it.

    Arguments match by parameter name, whether they were passed positionally or not."""
    name = _task_name(task)
    jobs = enqueued_jobs(app, name)
    for job in jobs:
        if _matches(app, job, arguments):
            return job
    wanted = ", ".join(f"{key}={value!r}" for key, value in arguments.items())
    if not jobs:
        queued = sorted({job.task for job in enqueued_jobs(app)})
        raise AssertionError(
            f"no queued job of task {name!r}; tasks with queued jobs: {queued or 'none'}"
        )
    seen = "\n".join(f"  job {job.id}: {job_arguments(app, job)!r}" for job in jobs[:20])
    more = f"\n  ... and {len(jobs) - 20} more" if len(jobs) > 20 else ""
    raise AssertionError(
        f"no queued job of task {name!r} with {wanted}; its {len(jobs)} queued job(s):\n"
        f"{seen}{more}"
    )


def assert_not_enqueued(app: App, task: TaskRef, /, **arguments: Any) -> None:
    """Assert that no queued job of `task` has these arguments (any job, without them)."""
    name = _task_name(task)
    found = [job for job in enqueued_jobs(app, name) if _matches(app, job, arguments)]
    if found:
        raise AssertionError(
            f"expected no queued job of task {name!r} matching {arguments!r}, found "
            f"{len(found)}: job {found[0].id} with {job_arguments(app, found[0])!r}"
        )
