"""pgjobs.testing without a database: argument matching, results, guards."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import pgjobs
from pgjobs import testing
from pgjobs.testing import DrainResult, JobRecord, job_arguments

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _job(task: str, args: list[Any], kwargs: dict[str, Any]) -> JobRecord:
    return JobRecord(
        id=1,
        task=task,
        queue="default",
        args=args,
        kwargs=kwargs,
        priority=0,
        state=pgjobs.JobState.QUEUED,
        attempt=0,
        max_attempts=None,
        run_at=NOW,
        enqueued_at=NOW,
        finished_at=None,
        dedup_key=None,
        errors=[],
    )


@pytest.fixture
def app() -> pgjobs.App:
    return pgjobs.App("postgresql://nowhere.invalid/x")  # never connects in these tests


def test_job_arguments_names_positional_arguments(app: pgjobs.App) -> None:
    @app.task(name="t.mail")
    def mail(to: str, subject: str = "hi", *rest: Any, **extra: Any) -> None: ...

    job = _job("t.mail", ["a@b.c", "s", 1, 2], {"lang": "fr"})
    assert job_arguments(app, job) == {"to": "a@b.c", "subject": "s", "rest": (1, 2), "lang": "fr"}
    # defaults are not filled in: only what was enqueued
    assert job_arguments(app, _job("t.mail", ["a@b.c"], {})) == {"to": "a@b.c"}


def test_job_arguments_of_unknown_tasks_and_unfit_arguments(app: pgjobs.App) -> None:
    @app.task(name="t.one")
    def one(x: int) -> None: ...

    assert job_arguments(app, _job("t.unknown", [1], {"k": 2})) == {"k": 2}
    assert job_arguments(app, _job("t.one", [1, 2, 3], {"k": 2})) == {"k": 2}


def test_drain_result_total() -> None:
    assert DrainResult().total == 0
    assert DrainResult(succeeded=3, retried=2, dead=1).total == 6
    assert DrainResult(succeeded=1) == DrainResult(1, 0, 0)


def test_task_references(app: pgjobs.App) -> None:
    @app.task(name="t.ref")
    def ref() -> None: ...

    assert testing._task_name(ref) == "t.ref"
    assert testing._task_name(ref.options(queue="q")) == "t.ref"
    assert testing._task_name("by.name") == "by.name"
    assert testing._task_name(None) is None


def test_drain_refuses_a_running_loop(app: pgjobs.App) -> None:
    async def inside() -> None:
        testing.drain(app)

    with pytest.raises(RuntimeError, match="drain_async"):
        asyncio.run(inside())


def test_frozen_clock_is_reexported() -> None:
    assert testing.FrozenClock is pgjobs.FrozenClock
    clock = testing.FrozenClock(NOW)
    assert clock.advance(timedelta(minutes=1)) == NOW + timedelta(minutes=1)
    assert set(testing.__all__) <= set(dir(testing))
