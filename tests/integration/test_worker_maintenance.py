"""Maintenance services driven directly with `run_once(now)`: the pruner and the rescuer."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

import pgjobs
from pgjobs import db as pgdb
from pgjobs.worker.pruner import Pruner
from pgjobs.worker.rescuer import Rescuer

NAMESPACE = pgdb.lock_namespace("pgjobs", "worker")
NOW = datetime(2031, 3, 14, 12, 0, tzinfo=UTC)


def _insert_history(
    db: psycopg.Connection[Any], job_id: int, state: str, finished_at: datetime
) -> None:
    db.execute(
        "INSERT INTO pgjobs.job_history (id, task, queue, args, kwargs, priority, state,"
        " attempt, max_attempts, run_at, enqueued_at, started_at, finished_at, worker_id,"
        " dedup_key, errors)"
        " VALUES (%(id)s, 'maint.t', 'default', '[]', '{}', 0, %(state)s, 1, 5,"
        " %(at)s, %(at)s, %(at)s, %(at)s, NULL, NULL, '[]')",
        {"id": job_id, "state": state, "at": finished_at},
    )


def _pruner(app: pgjobs.App, clock: pgjobs.Clock) -> Pruner:
    return Pruner(
        app.database.queries,
        lambda: pgdb.connect_async(app.database.dsn),
        clock,
        retention=timedelta(days=7),
        dead_retention=timedelta(days=30),
    )


def test_pruner_deletes_history_past_retention_only(
    app: pgjobs.App, db: psycopg.Connection[Any]
) -> None:
    clock = pgjobs.FrozenClock(NOW)
    day = timedelta(days=1)
    rows = {
        1: ("succeeded", NOW - 8 * day),  # past 7 days: pruned
        2: ("succeeded", NOW - 6 * day),  # kept
        3: ("cancelled", NOW - 8 * day),  # pruned with succeeded
        4: ("cancelled", NOW - timedelta(days=7) + timedelta(seconds=1)),  # just inside: kept
        5: ("dead", NOW - 8 * day),  # dead keep 30 days: kept
        6: ("dead", NOW - 29 * day),  # kept
        7: ("dead", NOW - 31 * day),  # pruned
        8: ("succeeded", NOW + day),  # in the future of `now`: kept
    }
    for job_id, (state, finished_at) in rows.items():
        _insert_history(db, job_id, state, finished_at)

    async def main() -> tuple[int, int]:
        pruner = _pruner(app, clock)
        try:
            first = await pruner.run_once(clock.now())
            again = await pruner.run_once(clock.now())
        finally:
            await pruner.close()
        return first, again

    first, again = asyncio.run(main())

    assert first == 3
    assert again == 0  # idempotent
    left = [row[0] for row in db.execute("SELECT id FROM pgjobs.job_history ORDER BY id")]
    assert left == [2, 4, 5, 6, 8]


def test_pruner_follows_the_clock_it_is_given(app: pgjobs.App, db: psycopg.Connection[Any]) -> None:
    clock = pgjobs.FrozenClock(NOW)
    _insert_history(db, 1, "succeeded", NOW - timedelta(days=1))
    _insert_history(db, 2, "dead", NOW - timedelta(days=1))

    async def main() -> list[int]:
        pruner = _pruner(app, clock)
        try:
            counts = [await pruner.run_once(clock.now())]
            clock.advance(timedelta(days=7))
            counts.append(await pruner.run_once(clock.now()))
            clock.advance(timedelta(days=23))
            counts.append(await pruner.run_once(clock.now()))
        finally:
            await pruner.close()
        return counts

    assert asyncio.run(main()) == [0, 1, 1]
    assert db.execute("SELECT count(*) FROM pgjobs.job_history").fetchone() == (0,)


class AheadClock(pgjobs.SystemClock):
    """A production clock on a host whose wall clock runs `skew` ahead: it leaves shared
    decisions to the database (`db_now()` is None), as every SystemClock does."""

    def __init__(self, skew: timedelta):
        self.skew = skew

    def now(self) -> datetime:
        return super().now() + self.skew


@pytest.mark.timeout(60)
def test_a_worker_whose_clock_runs_ahead_prunes_on_the_database_clock(
    app: pgjobs.App, db: psycopg.Connection[Any]
) -> None:
    """The pruner's own loop, with a host clock 31 days ahead: only what the database's
    clock makes old goes (once, that host deleted all history, dead jobs included)."""
    (db_now,) = db.execute("SELECT now()").fetchone()  # type: ignore[misc]
    day = timedelta(days=1)
    _insert_history(db, 1, "succeeded", db_now - 8 * day)  # past 7 days: pruned
    _insert_history(db, 2, "succeeded", db_now - day)
    _insert_history(db, 3, "dead", db_now - day)
    _insert_history(db, 4, "dead", db_now - 29 * day)
    clock = AheadClock(timedelta(days=31))
    assert clock.now() > db_now + 30 * day

    async def main() -> None:
        pruner = _pruner(app, clock)
        pruner.interval = 0.05
        passes = asyncio.create_task(pruner.loop())
        try:
            deadline = time.monotonic() + 30
            while db.execute("SELECT 1 FROM pgjobs.job_history WHERE id = 1").fetchone():
                assert time.monotonic() < deadline, "the pruner never pruned"
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.2)  # a few more passes: they must delete nothing else
        finally:
            passes.cancel()
            await asyncio.gather(passes, return_exceptions=True)
            await pruner.close()

    asyncio.run(main())
    left = [row[0] for row in db.execute("SELECT id FROM pgjobs.job_history ORDER BY id")]
    assert left == [2, 3, 4]


def _insert_running(db: psycopg.Connection[Any], worker_id: int, queue: str) -> int:
    row = db.execute(
        "INSERT INTO pgjobs.jobs (task, queue, state, attempt, started_at, worker_id)"
        " VALUES ('maint.run', %s, 'running', 1, now(), %s) RETURNING id",
        (queue, worker_id),
    ).fetchone()
    assert row is not None
    return int(row[0])


def _insert_worker(db: psycopg.Connection[Any], worker_id: int, grace: float = 5.0) -> None:
    db.execute(
        "INSERT INTO pgjobs.workers (id, host, pid, queues, concurrency, rescue_grace, protocol)"
        " VALUES (%s, 'test-host', 1, NULL, 1, make_interval(secs => %s), 2)",
        (worker_id, grace),
    )


def _lost_at(db: psycopg.Connection[Any]) -> dict[int, bool]:
    """Whether each worker row is marked lost."""
    rows = db.execute("SELECT id, lost_at IS NOT NULL FROM pgjobs.workers").fetchall()
    return dict(rows)


def _rescue(app: pgjobs.App, dsn: str, passes: int = 1) -> list[int]:
    async def main() -> list[int]:
        rescuer = Rescuer(
            app.database.queries,
            lambda: pgdb.connect_async(dsn),
            pgjobs.FrozenClock(NOW),
            lock_namespace=NAMESPACE,
            channel=pgdb.notify_channel("pgjobs"),
        )
        try:
            return [await rescuer.run_once(NOW) for _ in range(passes)]
        finally:
            await rescuer.close()

    return asyncio.run(main())


@pytest.mark.timeout(60)
def test_rescuer_requeues_jobs_of_lost_workers_only_after_their_grace(
    app: pgjobs.App, dsn: str, db: psycopg.Connection[Any]
) -> None:
    """A worker whose lock is gone is stamped lost on the first pass that sees it; its jobs
    are rescued once its own rescue_grace (database time) has passed since then."""
    lost_worker, live_worker, slow_worker = 999_999, 4242, 777
    lost_job = _insert_running(db, lost_worker, "rescue-q")
    live_job = _insert_running(db, live_worker, "rescue-q")
    slow_job = _insert_running(db, slow_worker, "rescue-q")
    _insert_worker(db, lost_worker, grace=0.5)
    _insert_worker(db, live_worker, grace=0.5)
    _insert_worker(db, slow_worker, grace=3600)

    with (
        psycopg.connect(dsn, autocommit=True) as holder,
        psycopg.connect(dsn, autocommit=True) as listener,
    ):
        locked = holder.execute(
            "SELECT pg_try_advisory_lock((%s::bigint << 32) | %s)", (NAMESPACE, live_worker)
        ).fetchone()
        assert locked == (True,)
        listener.execute('LISTEN "pgjobs.jobs"')

        assert _rescue(app, dsn, passes=2) == [0, 0]  # within the grace: only marked
        assert _lost_at(db) == {lost_worker: True, live_worker: False, slow_worker: True}
        time.sleep(0.6)
        assert _rescue(app, dsn, passes=2) == [1, 0]
        notified = [n.payload for n in listener.notifies(timeout=5, stop_after=1)]
        assert notified == ["rescue-q"]

        state, worker_id, attempt, due, errors = db.execute(
            "SELECT state, worker_id, attempt, run_at <= now(), errors FROM pgjobs.jobs"
            " WHERE id = %s",
            (lost_job,),
        ).fetchone()  # type: ignore[misc]
        assert (state, worker_id, attempt, due) == ("queued", None, 1, True)
        assert len(errors) == 1
        assert errors[0]["kind"] == "worker_lost"
        assert errors[0]["attempt"] == 1
        assert f"worker {lost_worker} was lost" in errors[0]["error"]

        running = db.execute(
            "SELECT id, state, worker_id, errors FROM pgjobs.jobs WHERE id = ANY(%s) ORDER BY id",
            ([live_job, slow_job],),
        ).fetchall()
        assert running == [
            (live_job, "running", live_worker, []),
            (slow_job, "running", slow_worker, []),
        ]
        # The lost worker's row goes with its jobs' rescue; the slow one's grace runs on.
        assert _lost_at(db) == {live_worker: False, slow_worker: True}

    # Once the lock is released (its session closed), the other job follows after its grace.
    assert _rescue(app, dsn) == [0]
    assert _lost_at(db) == {live_worker: True, slow_worker: True}
    time.sleep(0.6)
    assert _rescue(app, dsn) == [1]
    assert db.execute("SELECT state FROM pgjobs.jobs WHERE id = %s", (live_job,)).fetchone() == (
        "queued",
    )
    assert _lost_at(db) == {slow_worker: True}


@pytest.mark.timeout(60)
def test_rescuer_clears_the_mark_of_a_worker_that_took_its_lock_back(
    app: pgjobs.App, dsn: str, db: psycopg.Connection[Any]
) -> None:
    worker = 31337
    job = _insert_running(db, worker, "rescue-q")
    _insert_worker(db, worker, grace=0.5)
    assert _rescue(app, dsn) == [0]
    assert _lost_at(db) == {worker: True}
    with psycopg.connect(dsn, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock((%s::bigint << 32) | %s)", (NAMESPACE, worker))
        time.sleep(0.6)  # past the grace: only the lock keeps the job
        assert _rescue(app, dsn) == [0]
        assert _lost_at(db) == {worker: False}
    # Lost again: the grace starts over instead of counting from the first loss.
    assert _rescue(app, dsn) == [0]
    assert _lost_at(db) == {worker: True}
    assert db.execute("SELECT state FROM pgjobs.jobs WHERE id = %s", (job,)).fetchone() == (
        "running",
    )


def test_rescuer_requeues_at_once_a_job_whose_worker_row_is_gone(
    app: pgjobs.App, dsn: str, db: psycopg.Connection[Any]
) -> None:
    """No row, no worker that could take its lock back (a row is written before a claim)."""
    job = _insert_running(db, 123_456, "rescue-q")
    assert _rescue(app, dsn) == [1]
    assert db.execute("SELECT state FROM pgjobs.jobs WHERE id = %s", (job,)).fetchone() == (
        "queued",
    )


def test_rescued_job_over_max_attempts_goes_dead_without_running(
    app: pgjobs.App, db: psycopg.Connection[Any]
) -> None:
    """A job whose last allowed attempt was lost is not run again: it is buried."""
    ran: list[int] = []

    @app.task(name="maint.exhausted", max_attempts=2)
    def handler() -> None:
        ran.append(1)

    job_id = db.execute(
        "INSERT INTO pgjobs.jobs (task, state, attempt, max_attempts, started_at, worker_id)"
        " VALUES ('maint.exhausted', 'running', 2, 2, now(), 999999) RETURNING id"
    ).fetchone()[0]  # type: ignore[index]

    assert _rescue(app, app.database.dsn) == [1]
    app.run_worker(burst=True, install_signal_handlers=False)

    assert ran == []
    state, attempt, errors = db.execute(
        "SELECT state, attempt, errors FROM pgjobs.job_history WHERE id = %s", (job_id,)
    ).fetchone()  # type: ignore[misc]
    assert (state, attempt) == ("dead", 3)
    assert [e["kind"] for e in errors] == ["worker_lost", "exhausted"]
