"""The worker running in-process against a real Postgres: handlers, arguments, order."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

import pgjobs

NESTED_ARGS: list[Any] = [
    {"ü": "日本語 🎉", "list": [1, 2.5, None, True, {"deep": [[[]]]}]},
    [False, -7, "ĉĝĥĵŝŭ"],
]
NESTED_KWARGS: dict[str, Any] = {"name": "Zoë ✓", "meta": {"emoji": "🚀", "n": [{"k": {}}]}}


def _history(db: psycopg.Connection[Any], job_id: int) -> tuple[Any, ...] | None:
    return db.execute(
        "SELECT state, attempt, errors, worker_id FROM pgjobs.job_history WHERE id = %s",
        (job_id,),
    ).fetchone()


def test_sync_and_async_handlers_run_with_arguments_and_context(
    app: pgjobs.App, db: psycopg.Connection[Any]
) -> None:
    seen: dict[str, tuple[Any, ...]] = {}

    @app.task(name="basics.sync", queue="q-sync")
    def sync_handler(*args: Any, **kwargs: Any) -> str:
        job = pgjobs.current_job()
        seen["sync"] = (args, kwargs, job, threading.current_thread().name)
        return "ignored"

    @app.task(name="basics.async", queue="q-async")
    async def async_handler(*args: Any, **kwargs: Any) -> dict[str, int]:
        job = pgjobs.current_job()
        seen["async"] = (args, kwargs, job, threading.current_thread().name)
        return {"ignored": 1}

    sync_id = sync_handler.enqueue(*NESTED_ARGS, **NESTED_KWARGS)
    async_id = async_handler.enqueue(*NESTED_ARGS, **NESTED_KWARGS)
    enqueued_at = dict(
        db.execute(
            "SELECT id, enqueued_at FROM pgjobs.jobs WHERE id = ANY(%s)", ([sync_id, async_id],)
        ).fetchall()
    )

    app.run_worker(burst=True, install_signal_handlers=False)

    for kind, job_id, task, queue in (
        ("sync", sync_id, "basics.sync", "q-sync"),
        ("async", async_id, "basics.async", "q-async"),
    ):
        args, kwargs, job, _thread = seen[kind]
        assert list(args) == NESTED_ARGS
        assert kwargs == NESTED_KWARGS
        assert isinstance(job, pgjobs.Job)
        assert job.id == job_id
        assert job.task == task
        assert job.queue == queue
        assert job.attempt == 1
        assert job.enqueued_at == enqueued_at[job_id]
        assert job.enqueued_at.tzinfo is not None
        state, attempt, errors, worker_id = _history(db, job_id)  # type: ignore[misc]
        assert (state, attempt, errors) == ("succeeded", 1, [])
        assert worker_id == job.worker_id
    # Sync handlers run in the worker's thread pool, async ones on the event loop.
    assert seen["sync"][3].startswith("pgjobs-job")
    assert not seen["async"][3].startswith("pgjobs-job")
    assert db.execute("SELECT count(*) FROM pgjobs.jobs").fetchone() == (0,)


def test_current_job_outside_a_handler_raises(app: pgjobs.App) -> None:
    with pytest.raises(pgjobs.PgJobsError, match="only available inside"):
        pgjobs.current_job()


def test_arguments_enqueued_from_sql_reach_the_handler(
    app: pgjobs.App, db: psycopg.Connection[Any]
) -> None:
    seen: list[tuple[Any, ...]] = []

    @app.task(name="basics.from_sql")
    def handler(text: str, *, items: list[Any]) -> None:
        seen.append((text, items))

    job_id = db.execute(
        "SELECT pgjobs.enqueue(task => 'basics.from_sql', args => %s::jsonb, kwargs => %s::jsonb)",
        ('["naïve café ☕"]', '{"items": [{"a": null}, 1e3, "x"]}'),
    ).fetchone()[0]  # type: ignore[index]

    app.run_worker(burst=True, install_signal_handlers=False)

    assert seen == [("naïve café ☕", [{"a": None}, 1000, "x"])]
    assert _history(db, job_id)[0] == "succeeded"  # type: ignore[index]


def test_concurrency_one_runs_by_priority_then_run_at_then_id(
    app: pgjobs.App, db: psycopg.Connection[Any]
) -> None:
    order: list[str] = []

    @app.task(name="basics.order")
    def record(label: str) -> None:
        order.append(label)

    base = datetime.now(UTC) - timedelta(minutes=5)
    same_time = base + timedelta(seconds=10)
    # Enqueued in an order that matches none of the sort keys.
    record.options(priority=0, run_at=same_time).enqueue("p0-same-first-id")
    record.options(priority=-1, run_at=base).enqueue("p-1-oldest")
    record.options(priority=5, run_at=base + timedelta(seconds=30)).enqueue("p5-late")
    record.options(priority=0, run_at=same_time).enqueue("p0-same-second-id")
    record.options(priority=5, run_at=base + timedelta(seconds=20)).enqueue("p5-early")
    record.options(priority=0, run_at=base).enqueue("p0-oldest")
    record.options(priority=100).enqueue("p100-now")

    app.run_worker(concurrency=1, burst=True, install_signal_handlers=False)

    assert order == [
        "p100-now",
        "p5-early",
        "p5-late",
        "p0-oldest",
        "p0-same-first-id",
        "p0-same-second-id",
        "p-1-oldest",
    ]
    assert db.execute("SELECT count(*) FROM pgjobs.job_history").fetchone() == (7,)


def test_priority_order_holds_across_queues(app: pgjobs.App, db: psycopg.Connection[Any]) -> None:
    order: list[str] = []

    @app.task(name="basics.multi")
    def record(label: str) -> None:
        order.append(label)

    record.options(queue="a", priority=1).enqueue("a1")
    record.options(queue="b", priority=3).enqueue("b3")
    record.options(queue="a", priority=2).enqueue("a2")
    record.options(queue="c", priority=0).enqueue("c0")
    record.options(queue="b", priority=4).enqueue("b4")

    app.run_worker(concurrency=1, burst=True, install_signal_handlers=False)

    assert order == ["b4", "b3", "a2", "a1", "c0"]


def test_burst_worker_limited_to_queues_leaves_other_queues_alone(
    app: pgjobs.App, db: psycopg.Connection[Any]
) -> None:
    ran: list[str] = []

    @app.task(name="basics.queues")
    def record(label: str) -> None:
        ran.append(label)

    record.options(queue="mine").enqueue("mine")
    other = record.options(queue="other").enqueue("other")

    app.run_worker(queues=["mine"], burst=True, install_signal_handlers=False)

    assert ran == ["mine"]
    row = db.execute("SELECT state, attempt FROM pgjobs.jobs WHERE id = %s", (other,)).fetchone()
    assert row == ("queued", 0)


def test_concurrency_runs_jobs_in_parallel(app: pgjobs.App, db: psycopg.Connection[Any]) -> None:
    # Three sync handlers wait on one barrier: it only opens if all three run at once.
    barrier = threading.Barrier(3, timeout=10)
    passed: list[int] = []

    @app.task(name="basics.parallel")
    def meet(n: int) -> None:
        barrier.wait()
        passed.append(n)

    for n in range(3):
        meet.enqueue(n)

    app.run_worker(concurrency=3, burst=True, install_signal_handlers=False)

    assert sorted(passed) == [0, 1, 2]
    states = db.execute("SELECT state, count(*) FROM pgjobs.job_history GROUP BY state").fetchall()
    assert states == [("succeeded", 3)]


def test_many_jobs_drain_in_burst(app: pgjobs.App, db: psycopg.Connection[Any]) -> None:
    seen: list[int] = []

    @app.task(name="basics.bulk")
    async def collect(n: int) -> None:
        seen.append(n)

    ids = collect.enqueue_many([{"n": n} for n in range(300)])

    app.run_worker(concurrency=8, burst=True, install_signal_handlers=False)

    assert sorted(seen) == list(range(300))
    done = db.execute(
        "SELECT count(*) FROM pgjobs.job_history WHERE id = ANY(%s) AND state = 'succeeded'",
        (ids,),
    ).fetchone()
    assert done == (300,)
    assert db.execute("SELECT count(*) FROM pgjobs.jobs").fetchone() == (0,)
