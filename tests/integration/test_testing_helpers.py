"""pgjobs.testing against a real Postgres: drain, make_due, enqueued_jobs, assertions."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

import pgjobs
from pgjobs.testing import (
    DrainResult,
    FrozenClock,
    assert_enqueued,
    assert_not_enqueued,
    drain,
    drain_async,
    enqueued_jobs,
    make_due,
)


def test_drain_runs_sync_async_and_chained_jobs(app: pgjobs.App) -> None:
    ran: list[str] = []

    @app.task(name="t.first")
    def first(n: int) -> None:
        ran.append(f"first {n}")
        second.enqueue(n * 10)

    @app.task(name="t.second", queue="other")
    async def second(n: int) -> None:
        ran.append(f"second {n}")

    first.enqueue(1)
    first.enqueue(2)

    result = drain(app)

    assert sorted(ran) == ["first 1", "first 2", "second 10", "second 20"]
    assert result == DrainResult(succeeded=4, retried=0, dead=0)
    assert result.total == 4
    assert enqueued_jobs(app) == []


def test_drain_counts_retries_and_dead_jobs(app: pgjobs.App) -> None:
    attempts: list[int] = []

    @app.task(name="t.flaky", max_attempts=3, retry=pgjobs.Backoff(initial=0, factor=1, max=0))
    def flaky() -> None:
        attempts.append(pgjobs.current_job().attempt)
        raise RuntimeError("always fails")

    @app.task(name="t.later", retry=pgjobs.Backoff(initial=3600, factor=1, jitter=0))
    def later() -> None:
        raise RuntimeError("fails once, retried in an hour")

    @app.task(name="t.ok")
    def ok() -> None:
        pass

    flaky.enqueue()
    later.enqueue()
    ok.enqueue()

    result = drain(app)

    assert attempts == [1, 2, 3]  # zero backoff: the retries are due within the same drain
    assert result == DrainResult(succeeded=1, retried=3, dead=1)
    (waiting,) = enqueued_jobs(app)
    assert waiting.task == "t.later"
    assert waiting.attempt == 1
    assert waiting.run_at > datetime.now(UTC) + timedelta(minutes=30)
    assert [e["kind"] for e in waiting.errors] == ["exception"]
    (dead,) = enqueued_jobs(app, flaky, state="dead")
    assert dead.attempt == 3
    assert dead.finished_at is not None
    assert len(dead.errors) == 3


def test_make_due_runs_scheduled_jobs_now(app: pgjobs.App) -> None:
    ran: list[int] = []

    @app.task(name="t.report", queue="reports")
    def report(n: int) -> None:
        ran.append(n)

    report.options(delay=timedelta(hours=2)).enqueue(1)
    report.options(delay=timedelta(hours=2), queue="elsewhere").enqueue(2)

    assert drain(app) == DrainResult()
    assert ran == []
    assert make_due(app, report, queue="reports") == 1
    assert drain(app).succeeded == 1
    assert ran == [1]
    assert make_due(app) == 1
    assert drain(app, queues=["elsewhere"]).succeeded == 1
    assert ran == [1, 2]
    assert make_due(app) == 0


def test_drain_only_serves_the_given_queues(app: pgjobs.App) -> None:
    @app.task(name="t.a", queue="a")
    def a() -> None: ...

    @app.task(name="t.b", queue="b")
    def b() -> None: ...

    a.enqueue()
    b.enqueue()
    assert drain(app, queues=["a"]) == DrainResult(succeeded=1)
    assert [job.task for job in enqueued_jobs(app)] == ["t.b"]


def test_drain_async_on_the_callers_loop(app: pgjobs.App) -> None:
    seen: list[int] = []

    @app.task(name="t.async")
    async def handler(n: int) -> None:
        seen.append(n)

    async def main() -> tuple[DrainResult, str]:
        await handler.enqueue_async(5)
        result = await drain_async(app)
        with pytest.raises(RuntimeError, match="drain_async") as info:
            drain(app)
        await app.aclose()
        return result, str(info.value)

    result, _message = asyncio.run(main())
    assert result.succeeded == 1
    assert seen == [5]


def test_drain_with_a_frozen_clock(dsn: str) -> None:
    clock = FrozenClock(datetime(2030, 5, 1, 9, 0, tzinfo=UTC))
    app = pgjobs.App(dsn, clock=clock)
    try:

        @app.task(name="t.fails")
        def fails() -> None:
            raise RuntimeError("boom")

        fails.enqueue()
        assert drain(app) == DrainResult(retried=1)
        (job,) = enqueued_jobs(app, fails)
        assert job.errors[0]["at"].startswith("2030-05-01T09:00:00")  # the worker's clock
        clock.advance(timedelta(hours=1))
        make_due(app)
        assert drain(app) == DrainResult(retried=1)
        (job,) = enqueued_jobs(app, fails)
        assert [e["at"][:19] for e in job.errors] == ["2030-05-01T09:00:00", "2030-05-01T10:00:00"]
    finally:
        app.close()


def test_drain_needs_a_migrated_schema(dsn: str) -> None:
    app = pgjobs.App(dsn, schema="not_migrated")
    try:
        with pytest.raises(pgjobs.SchemaError, match="pgjobs migrate"):
            drain(app)
    finally:
        app.close()


def test_enqueued_jobs_filters(app: pgjobs.App) -> None:
    @app.task(name="t.mail", queue="email")
    def mail(to: str, subject: str = "") -> None: ...

    first = mail.enqueue("a@b.c", subject="hi")
    second = mail.options(queue="bulk", priority=5, dedup_key="k").enqueue(to="d@e.f")
    other = app.enqueue("t.unregistered", kwargs={"x": 1})

    assert [j.id for j in enqueued_jobs(app)] == [first, second, other]
    assert [j.id for j in enqueued_jobs(app, mail)] == [first, second]
    assert [j.id for j in enqueued_jobs(app, "t.mail", queue="bulk")] == [second]
    assert [j.id for j in enqueued_jobs(app, mail.options(queue="x"))] == [first, second]
    assert enqueued_jobs(app, state=pgjobs.JobState.SUCCEEDED) == []
    job = enqueued_jobs(app, queue="bulk")[0]
    assert (job.task, job.args, job.kwargs) == ("t.mail", [], {"to": "d@e.f"})
    assert (job.priority, job.dedup_key, job.state, job.attempt) == (5, "k", "queued", 0)
    assert job.finished_at is None
    with pytest.raises(ValueError, match="not_a_state"):
        enqueued_jobs(app, state="not_a_state")

    drain(app, queues=["email"])
    assert [j.id for j in enqueued_jobs(app, state=None)] == [first, second, other]
    assert [j.id for j in enqueued_jobs(app, state="succeeded")] == [first]


def test_assert_enqueued_matches_arguments_by_name(app: pgjobs.App) -> None:
    @app.task(name="t.mail")
    def mail(to: str, subject: str, **extra: Any) -> None: ...

    job_id = mail.enqueue("a@b.c", "welcome", lang="fr")
    mail.enqueue("x@y.z", subject="other")

    assert assert_enqueued(app, mail, to="a@b.c").id == job_id
    assert assert_enqueued(app, "t.mail", subject="welcome", lang="fr").id == job_id
    assert assert_enqueued(app, mail).task == "t.mail"  # any job of the task
    assert_not_enqueued(app, mail, to="nobody@b.c")
    assert_not_enqueued(app, "t.other")

    with pytest.raises(AssertionError, match=r"with to='nobody@b\.c'.*2 queued job") as info:
        assert_enqueued(app, mail, to="nobody@b.c")
    assert "'to': 'a@b.c', 'subject': 'welcome', 'lang': 'fr'" in str(info.value)
    with pytest.raises(AssertionError, match=r"no queued job of task 't\.other'.*\['t\.mail'\]"):
        assert_enqueued(app, "t.other")
    with pytest.raises(AssertionError, match=r"expected no queued job.*lang"):
        assert_not_enqueued(app, mail, to="a@b.c")


def test_assert_enqueued_sees_the_callers_transaction_only_after_commit(
    app: pgjobs.App, dsn: str
) -> None:
    @app.task(name="t.receipt")
    def receipt(order_id: int) -> None: ...

    with psycopg.connect(dsn) as conn:
        receipt.options(conn=conn).enqueue(7)
        with pytest.raises(AssertionError, match="no queued job"):
            assert_enqueued(app, receipt, order_id=7)  # not committed yet
        conn.rollback()
        receipt.options(conn=conn).enqueue(8)
    assert_enqueued(app, receipt, order_id=8)
    assert_not_enqueued(app, receipt, order_id=7)


def test_helpers_on_a_custom_schema(dsn: str) -> None:
    app = pgjobs.App(dsn, schema="tenant_a")
    try:
        app.migrate()

        @app.task(name="t.x")
        def x(n: int) -> None: ...

        x.enqueue(1)
        assert_enqueued(app, x, n=1)
        assert drain(app).succeeded == 1
        assert enqueued_jobs(app, state="succeeded")[0].kwargs == {}
        assert enqueued_jobs(app, state="succeeded")[0].args == [1]
    finally:
        app.close()
