"""Issue 10's worker holes, each closed at its root: a run is fenced once it was rescued,
nothing in a row stops a worker, outdated workers stop, unwritten outcomes bound the claims,
foreign lock holders are not trusted, rescued jobs keep their place, stop is never lost,
and an ack never fails on a stray history row.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import psycopg
import pytest
from dbtools import allow_connections
from worker_harness import WAIT, running_worker, sync_check, until

import pgjobs
from pgjobs import db as pgdb
from pgjobs.worker import Worker, WorkerConfig

NAMESPACE = pgdb.lock_namespace("pgjobs", "worker")
Conn = psycopg.Connection[Any]


def _rescue(conn: Conn, app: pgjobs.App) -> list[int]:
    """One pass of the real rescue statement, as another worker's rescuer would run it."""
    params = {"namespace": NAMESPACE, "channel": pgdb.notify_channel(app.schema)}
    return [row[0] for row in conn.execute(app.database.queries["rescue_jobs"], params)]


def _session_pid(conn: Conn, worker_id: int) -> int:
    row = conn.execute("SELECT session_pid FROM pgjobs.workers WHERE id = %s", (worker_id,))
    pid = row.fetchone()
    assert pid is not None
    assert pid[0] is not None
    return int(pid[0])


def _ready(worker: Worker) -> bool:
    session = getattr(worker, "session", None)
    return session is not None and session.ready.is_set()


def _fake_worker(conn: Conn, worker_id: int, grace: float = 0.2, session_pid: int = 0) -> None:
    conn.execute(
        "INSERT INTO pgjobs.workers (id, host, pid, concurrency, rescue_grace, session_pid,"
        " lock_namespace, protocol) VALUES (%s, 'h', 1, 1, make_interval(secs => %s), %s, %s, 2)",
        (worker_id, grace, session_pid or None, NAMESPACE),
    )


def _running_job(conn: Conn, worker_id: int, run_at: str = "now()") -> int:
    row = conn.execute(
        "INSERT INTO pgjobs.jobs (task, state, attempt, worker_id, started_at, run_at)"
        f" VALUES ('t', 'running', 1, %s, now(), {run_at}) RETURNING id",
        (worker_id,),
    ).fetchone()
    assert row is not None
    return int(row[0])


# --------------------------------------------------------------------------- fencing


@pytest.mark.timeout(60)
def test_a_loop_blocked_past_its_window_never_takes_back_a_session_whose_jobs_were_rescued(
    app: pgjobs.App, dsn: str, db: Conn
) -> None:
    """Defect 1: an async handler blocks the loop; meanwhile the session backend is cut and
    another worker's rescuer hands the long job out again. When the loop wakes, the worker
    must not take its id back and let the rescued run carry on: it stops that handler."""
    events: list[tuple[str, int]] = []
    grace = 1.0

    async def main() -> tuple[int, int, int | None]:
        long_started = asyncio.Event()

        @app.task(name="fence.long")
        async def long() -> None:
            attempt = pgjobs.current_job().attempt
            events.append(("start", attempt))
            long_started.set()
            try:
                if attempt == 1:
                    await asyncio.sleep(60)
            finally:
                events.append(("end", attempt))

        @app.task(name="fence.blocker")
        async def blocker() -> None:
            if pgjobs.current_job().attempt == 1:
                time.sleep(3.0)  # noqa: ASYNC251 - the fault under test: a blocked loop

        config = WorkerConfig(poll_interval=0.1, rescue_interval=30, rescue_grace=grace)
        async with running_worker(app, config) as worker:
            # The watchdog thread would exit this (pytest's) process with code 75 while the
            # loop is blocked; tests/chaos/test_chaos_stalls.py proves that. Here it is
            # stopped, to show that the loop side fences on its own when it wakes.
            worker.watch.close()
            long_id = await long.enqueue_async()
            await asyncio.wait_for(long_started.wait(), WAIT)
            first = worker.session.worker_id
            assert first is not None
            rescued: list[int] = []

            def other_worker() -> None:  # runs while this loop is blocked
                with psycopg.connect(dsn, autocommit=True) as conn:
                    time.sleep(0.3)
                    conn.execute("SELECT pg_terminate_backend(%s)", (_session_pid(conn, first),))
                    deadline = time.monotonic() + 2.5
                    while time.monotonic() < deadline and not rescued:
                        rescued.extend(_rescue(conn, app))
                        time.sleep(0.05)

            thread = threading.Thread(target=other_worker)
            thread.start()
            await blocker.enqueue_async()
            await asyncio.to_thread(thread.join)
            assert long_id in rescued  # rescued while the loop was blocked
            await until(sync_check(lambda: ("end", 2) in events), "the rescued job to run again")
            await asyncio.wait_for(worker.acker.flushed(), WAIT)
            second = worker.session.worker_id
        return long_id, first, second

    long_id, first, second = asyncio.run(main())
    # The first run was stopped before the rescued one started: never both at once.
    assert events == [("start", 1), ("end", 1), ("start", 2), ("end", 2)]
    assert second not in (None, first)
    state, attempt, errors = db.execute(
        "SELECT state, attempt, errors FROM pgjobs.job_history WHERE id = %s", (long_id,)
    ).fetchone()  # type: ignore[misc]
    assert (state, attempt) == ("succeeded", 2)
    assert [e["kind"] for e in errors] == ["worker_lost"]


def test_the_database_refuses_a_reattach_once_the_grace_ran_out_or_the_worker_was_rescued(
    app: pgjobs.App, db: Conn
) -> None:
    q = app.database.queries
    _fake_worker(db, 41, grace=0.2)
    assert db.execute(q["reattach_worker"], {"id": 41}).fetchone() == ([],)
    db.execute("UPDATE pgjobs.workers SET lost_at = now() - interval '1 second' WHERE id = 41")
    assert db.execute(q["reattach_worker"], {"id": 41}).fetchone() is None  # grace ran out
    _fake_worker(db, 42, grace=30)
    job = _running_job(db, 42)
    assert db.execute(q["reattach_worker"], {"id": 42}).fetchone() == ([job],)
    db.execute("DELETE FROM pgjobs.workers WHERE id = 42")  # what a rescue does
    assert db.execute(q["reattach_worker"], {"id": 42}).fetchone() is None


def test_a_failed_runs_outcome_is_matched_on_its_attempt(app: pgjobs.App, db: Conn) -> None:
    """Retries, burials and hand-backs match the attempt too: attempt 1's late outcome
    cannot end attempt 2, even under the same worker id."""
    q = app.database.queries
    _fake_worker(db, 43, grace=30)
    job = _running_job(db, 43)
    db.execute("UPDATE pgjobs.jobs SET attempt = 2 WHERE id = %s", (job,))  # claimed again
    error = '{"kind": "exception"}'
    db.execute(q["bury_jobs"], {"ids": [job], "attempts": [1], "errors": [error], "worker_id": 43})
    assert db.execute("SELECT state FROM pgjobs.jobs WHERE id = %s", (job,)).fetchone() == (
        "running",
    )
    db.execute(q["bury_jobs"], {"ids": [job], "attempts": [2], "errors": [error], "worker_id": 43})
    assert db.execute("SELECT state FROM pgjobs.job_history WHERE id = %s", (job,)).fetchone() == (
        "dead",
    )


@pytest.mark.timeout(60)
def test_a_worker_whose_row_was_removed_retires_its_id_and_stops_its_handlers(
    app: pgjobs.App, db: Conn
) -> None:
    """The worker id is the run's generation: once its row is gone (a rescue, or an
    operator), the worker notices at its next heartbeat and never carries on under it; the
    job is then rescued and runs again. (A rescuer that passes between the deletion and that
    heartbeat could hand the job out at once: the README warns against deleting the rows of
    live workers; here rescues wait for a pass the test runs itself.)"""
    events: list[tuple[str, int]] = []

    async def main() -> tuple[int, int | None]:
        started = asyncio.Event()

        @app.task(name="gone.long")
        async def long() -> None:
            attempt = pgjobs.current_job().attempt
            events.append(("start", attempt))
            started.set()
            try:
                if attempt == 1:
                    await asyncio.sleep(60)
            finally:
                events.append(("end", attempt))

        config = WorkerConfig(poll_interval=0.1, heartbeat_interval=0.2, rescue_interval=60)
        async with running_worker(app, config) as worker:
            await long.enqueue_async()
            await asyncio.wait_for(started.wait(), WAIT)
            first = worker.session.worker_id
            assert first is not None
            delete = "DELETE FROM pgjobs.workers WHERE id = %s"
            await asyncio.to_thread(db.execute, delete, (first,))
            await until(sync_check(lambda: ("end", 1) in events), "the handler to be stopped")
            assert await asyncio.to_thread(_rescue, db, app) != []
            await until(sync_check(lambda: ("end", 2) in events), "the job to run again")
            await asyncio.wait_for(worker.acker.flushed(), WAIT)
            return first, worker.session.worker_id

    first, second = asyncio.run(main())
    assert events == [("start", 1), ("end", 1), ("start", 2), ("end", 2)]
    assert second not in (None, first)


# --------------------------------------------------------------------------- poison rows

POISON = {
    "nested-5000-deep": ("kwargs", '{"x": ' + "[" * 5000 + "]" * 5000 + "}"),
    "integer-of-5000-digits": ("kwargs", '{"x": ' + "9" * 5000 + "}"),
    "args-5000-deep": ("args", "[" + "[" * 5000 + "]" * 5000 + "]"),
}


@pytest.mark.timeout(90)
def test_rows_the_worker_cannot_decode_fail_like_errors_and_the_queue_keeps_draining(
    app: pgjobs.App, db: Conn
) -> None:
    """Defect 2: such rows (written by SQL callers or older versions) used to crash the
    claimer in a loop with no attempt counted while the jobs behind them waited."""
    ran: list[int] = []

    @app.task(name="poison.t", max_attempts=2, retry=pgjobs.Backoff(initial=0.01, jitter=0))
    def handler(*args: Any, **kwargs: Any) -> None:
        ran.append(pgjobs.current_job().id)

    poison = {}
    for name, (column, value) in POISON.items():
        row = db.execute(
            f"INSERT INTO pgjobs.jobs (task, {column}) VALUES ('poison.t', %s::jsonb) RETURNING id",
            (value,),
        ).fetchone()
        assert row is not None
        poison[name] = row[0]
    infinite = db.execute(
        "INSERT INTO pgjobs.jobs (task, run_at) VALUES ('poison.t', '-infinity') RETURNING id"
    ).fetchone()
    assert infinite is not None
    good = handler.enqueue_many([{} for _ in range(50)])

    worker = Worker(app, WorkerConfig(burst=True, concurrency=4, poll_interval=0.05))
    worker.run(install_signal_handlers=False)
    assert worker.exit_code == 0
    db.execute("UPDATE pgjobs.jobs SET run_at = now() WHERE state = 'queued'")  # the retries
    worker = Worker(app, WorkerConfig(burst=True, concurrency=4, poll_interval=0.05))
    worker.run(install_signal_handlers=False)
    assert worker.exit_code == 0

    assert sorted(ran) == sorted([*good, infinite[0]])  # '-infinity' runs: it is just early
    rows = db.execute(
        "SELECT id, state, attempt, errors FROM pgjobs.job_history WHERE id = ANY(%s)",
        (list(poison.values()),),
    ).fetchall()
    assert len(rows) == len(POISON)
    for job_id, state, attempt, errors in rows:
        assert (state, attempt) == ("dead", 2), job_id
        assert [e["kind"] for e in errors] == ["bad_row", "bad_row"]
        assert "cannot be decoded" in errors[0]["error"]
    assert db.execute("SELECT count(*) FROM pgjobs.jobs").fetchone() == (0,)


# --------------------------------------------------------------------------- upgrades


def test_a_worker_older_than_the_schema_cannot_register_or_heartbeat(db: Conn) -> None:
    """Defect 3: what an older worker's register and heartbeat statements meet."""
    with pytest.raises(psycopg.Error) as refused:
        db.execute("INSERT INTO pgjobs.workers (id, host, pid, concurrency) VALUES (9, 'h', 1, 1)")
    assert refused.value.sqlstate == "PJ001"
    assert "older than this schema accepts (2)" in str(refused.value)
    _fake_worker(db, 10)
    db.execute("UPDATE pgjobs.compatibility SET min_worker_protocol = 3")
    with pytest.raises(psycopg.Error) as heartbeat:
        db.execute("UPDATE pgjobs.workers SET heartbeat_at = now() WHERE id = 10")
    assert heartbeat.value.sqlstate == "PJ001"
    db.execute("UPDATE pgjobs.workers SET lost_at = now() WHERE id = 10")  # rescuers may


@pytest.mark.timeout(60)
def test_a_running_worker_stops_once_the_schema_requires_a_newer_protocol(
    app: pgjobs.App, db: Conn, caplog: pytest.LogCaptureFixture
) -> None:
    ran: list[int] = []

    @app.task(name="upgrade.t")
    def handler() -> None:
        ran.append(1)

    async def main() -> Worker:
        worker = Worker(app, WorkerConfig(poll_interval=0.1, heartbeat_interval=0.2))
        runner = asyncio.create_task(worker.run_async())
        await until(sync_check(lambda: _ready(worker)), "registration")
        await asyncio.to_thread(
            db.execute, "UPDATE pgjobs.compatibility SET min_worker_protocol = 3"
        )
        await asyncio.wait_for(runner, WAIT)
        return worker

    with caplog.at_level(logging.CRITICAL, logger="pgjobs.worker"):
        worker = asyncio.run(main())
    assert worker.exit_code == 1
    assert "older than this schema accepts (3): stopping this worker" in caplog.text
    handler.enqueue()  # a stopped worker claims nothing
    assert ran == []


# --------------------------------------------------------------------------- acks


@pytest.mark.timeout(90)
def test_a_worker_that_cannot_write_outcomes_stops_claiming(
    app: pgjobs.App, dsn: str, db: Conn
) -> None:
    """Defect 4: with its ack connection gone and no new connection to be had, a worker
    runs at most `unacked_limit` jobs, then waits; once connections come
    back, every job is recorded exactly once."""
    ran: list[int] = []

    @app.task(name="acks.t")
    def handler(n: int) -> None:
        ran.append(n)

    async def main() -> tuple[int, int]:
        config = WorkerConfig(concurrency=4, poll_interval=0.1)
        async with running_worker(app, config) as worker:
            handler.enqueue(n=-1)
            await until(sync_check(lambda: ran == [-1]), "the first job")
            await asyncio.wait_for(worker.acker.flushed(), WAIT)
            await asyncio.to_thread(allow_connections, dsn, False)
            try:
                # The ack connection's last statement moved the first job to history.
                await asyncio.to_thread(
                    db.execute,
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    " AND query LIKE '%%job_history%%'",
                )
                await asyncio.to_thread(handler.enqueue_many, [{"n": n} for n in range(600)])
                limit = worker.unacked_limit  # handlers running + outcomes unwritten
                await until(sync_check(lambda: len(ran) > limit - 5), "the budget to fill")
                await asyncio.sleep(1.0)
                stalled_at = len(ran)
            finally:
                await asyncio.to_thread(allow_connections, dsn, True)
            await until(sync_check(lambda: len(ran) == 601), "the rest of the jobs", limit=30)
            await asyncio.wait_for(worker.acker.flushed(), WAIT)
            return stalled_at, limit

    stalled_at, limit = asyncio.run(main())
    assert stalled_at - 1 <= limit  # the first job's outcome was written before the cut
    assert sorted(ran) == list(range(-1, 600))
    assert db.execute(
        "SELECT count(*) FROM pgjobs.job_history WHERE state = 'succeeded' AND attempt = 1"
    ).fetchone() == (601,)


def test_connection_refusals_for_lack_of_slots_are_recognised(dsn: str, db: Conn) -> None:
    db.execute("DROP ROLE IF EXISTS pgjobs_no_slots")
    db.execute("CREATE ROLE pgjobs_no_slots LOGIN CONNECTION LIMIT 0")
    try:
        with pytest.raises(pgjobs.PgJobsError) as refused:
            pgdb.connect(psycopg.conninfo.make_conninfo(dsn, user="pgjobs_no_slots"))
        assert pgdb.connection_shortage(refused.value) == (
            "the role's or database's CONNECTION LIMIT reached"
        )
        assert pgdb.connection_shortage(ValueError("something else")) is None
    finally:
        db.execute("DROP ROLE pgjobs_no_slots")


def test_an_ack_never_fails_on_a_stray_history_row(app: pgjobs.App, db: Conn) -> None:
    """Defect 6: a history row that already holds the job's id (written by hand, or forged
    before producers lost that right) must not make the ack fail and the job run forever."""

    @app.task(name="stray.t")
    def handler() -> None:
        pgjobs.current_job()

    job_id = handler.enqueue()
    db.execute(
        "INSERT INTO pgjobs.job_history (id, task, queue, args, kwargs, priority, state,"
        " attempt, run_at, enqueued_at, errors)"
        " VALUES (%s, 'forged', 'q', '[]', '{}', 0, 'dead', 9, now(), now(), '[]')",
        (job_id,),
    )
    app.run_worker(burst=True, install_signal_handlers=False)
    assert db.execute(
        "SELECT task, state, attempt FROM pgjobs.job_history WHERE id = %s", (job_id,)
    ).fetchone() == ("stray.t", "succeeded", 1)
    assert db.execute("SELECT count(*) FROM pgjobs.jobs").fetchone() == (0,)


# --------------------------------------------------------------------------- locks, rescue


def test_a_foreign_holder_of_a_lost_workers_lock_does_not_keep_its_jobs(
    app: pgjobs.App, dsn: str, db: Conn
) -> None:
    """Defect 5: any role can take a dead worker's advisory lock. The rescuer trusts only the
    backend the worker registered, and worker_status shows the foreign holder."""
    with psycopg.connect(dsn, autocommit=True) as session, psycopg.connect(dsn) as spoofer:
        session_pid = session.info.backend_pid
        _fake_worker(db, 44, grace=0.2, session_pid=session_pid)
        session.execute("SELECT pg_advisory_lock(%s)", ((NAMESPACE << 32) | 44,))
        job = _running_job(db, 44)
        assert _rescue(db, app) == []
        status = "SELECT session, lock_holder_pid FROM pgjobs.worker_status WHERE id = 44"
        assert db.execute(status).fetchone() == ("live", session_pid)
        session.close()  # the worker dies; someone else grabs its key
        spoofer.execute("SELECT pg_advisory_lock(%s)", ((NAMESPACE << 32) | 44,))
        spoofer.commit()
        assert db.execute(status).fetchone() == ("foreign", spoofer.info.backend_pid)
        _rescue(db, app)  # stamps lost_at
        time.sleep(0.3)
        assert _rescue(db, app) == [job]


def test_rescued_jobs_keep_their_place_in_the_queue(app: pgjobs.App, db: Conn) -> None:
    """Defect 9: a rescued job keeps its run_at, so it runs before newer jobs."""
    _fake_worker(db, 45, grace=0.0)
    old = _running_job(db, 45, run_at="now() - interval '1 hour'")
    before = db.execute("SELECT run_at FROM pgjobs.jobs WHERE id = %s", (old,)).fetchone()
    db.execute("DELETE FROM pgjobs.workers WHERE id = 45")
    db.execute("INSERT INTO pgjobs.jobs (task) SELECT 't' FROM generate_series(1, 20)")
    assert _rescue(db, app) == [old]
    assert db.execute("SELECT run_at FROM pgjobs.jobs WHERE id = %s", (old,)).fetchone() == before
    claimed = db.execute(
        app.database.queries["claim_jobs"], {"queues": ["default"], "limit": 1, "worker_id": 46}
    ).fetchall()
    assert [row[0] for row in claimed] == [old]


# --------------------------------------------------------------------------- stop


@pytest.mark.timeout(120)
def test_stop_finishes_under_a_storm_of_notifications(app: pgjobs.App, dsn: str) -> None:
    """Defect 10: a wake-up and the claimer's cancellation in one loop iteration must not
    swallow the cancellation (asyncio.wait_for on Python 3.11 does)."""
    storming = threading.Event()
    channel = pgdb.notify_channel(app.schema)

    def storm() -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            while not storming.is_set():
                conn.execute(
                    "SELECT pg_notify(%s, 'default') FROM generate_series(1, 20)", (channel,)
                )

    thread = threading.Thread(target=storm)
    thread.start()
    try:

        async def main() -> None:
            app.enqueue("storm.none", queue="default")  # the queue exists
            for _ in range(25):
                worker = Worker(app, WorkerConfig(poll_interval=30, cron=False))
                runner = asyncio.create_task(worker.run_async())
                await until(sync_check(lambda w=worker: _ready(w)), "ready")
                await asyncio.sleep(0.05)
                worker.stop()
                await asyncio.wait_for(runner, 10)

        asyncio.run(main())
    finally:
        storming.set()
        thread.join()


def test_a_wakeup_and_a_cancellation_in_one_iteration_still_cancel(app: pgjobs.App) -> None:
    async def main() -> None:
        worker = Worker(app)
        worker._loop = asyncio.get_running_loop()
        waiting = asyncio.create_task(worker._woken(30))
        await asyncio.sleep(0)
        worker._wakeup.set()
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting

    asyncio.run(main())
