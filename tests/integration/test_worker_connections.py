"""The worker's connections are terminated under it (pg_terminate_backend): it recovers.

Delivery is at-least-once: a job may run more than once, but every job ends succeeded.
"""

from __future__ import annotations

import asyncio
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


async def _rows(conn: psycopg.AsyncConnection[Any], query: str, *params: Any) -> list[Any]:
    cur = await conn.execute(query, params)
    return await cur.fetchall()


async def _session_pid(conn: psycopg.AsyncConnection[Any], worker_id: int) -> int | None:
    """The backend holding the worker's liveness lock: its session connection."""
    rows = await _rows(
        conn,
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1"
        " AND classid = %s::oid AND objid = %s::oid"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        NAMESPACE,
        worker_id,
    )
    return rows[0][0] if rows else None


async def _registered(worker: Worker, conn: psycopg.AsyncConnection[Any]) -> tuple[int, int]:
    """The worker's id and the pid of the backend that holds its lock."""
    worker_id = worker.session.worker_id
    assert worker_id is not None
    pid = await _session_pid(conn, worker_id)
    assert pid is not None
    return worker_id, pid


async def _other_worker_pids(conn: psycopg.AsyncConnection[Any], session_pid: int) -> list[int]:
    """The worker's claim, ack and maintenance connections (not its session, not ours)."""
    rows = await _rows(
        conn,
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name = 'pgjobs' AND pid <> pg_backend_pid() AND pid <> %s",
        session_pid,
    )
    return [row[0] for row in rows]


async def _terminate(conn: psycopg.AsyncConnection[Any], pids: list[int]) -> int:
    rows = await _rows(
        conn,
        "SELECT count(*) FILTER (WHERE t) FROM unnest(%s::int[]) p, pg_terminate_backend(p) t",
        pids,
    )
    return int(rows[0][0])


async def _allow_connections(dsn: str, allow: bool) -> None:
    await asyncio.to_thread(allow_connections, dsn, allow)


@pytest.mark.timeout(60)
def test_session_loss_takes_the_same_id_back_relistens_and_still_wakes_on_notify(
    app: pgjobs.App, db: psycopg.Connection[Any]
) -> None:
    ran: list[int] = []

    async def main() -> int:
        done = asyncio.Event()

        @app.task(name="conn.wake")
        async def wake(n: int) -> None:
            ran.append(n)
            done.set()

        # poll_interval=30: within the 10 s waits below only a NOTIFY can wake the worker.
        config = WorkerConfig(poll_interval=30, heartbeat_interval=30, rescue_interval=0.1)
        async with (
            running_worker(app, config) as worker,
            await psycopg.AsyncConnection.connect(app.database.dsn, autocommit=True) as mon,
        ):
            first = worker.session.worker_id
            assert first is not None
            await asyncio.sleep(0.2)
            await mon.execute("SELECT pgjobs.enqueue(task => 'conn.wake', args => '[1]')")
            await asyncio.wait_for(done.wait(), WAIT)
            done.clear()

            pid = await _session_pid(mon, first)
            assert pid is not None
            listening = await _rows(
                mon,
                "SELECT pid, query FROM pg_stat_activity"
                " WHERE datname = current_database() AND query LIKE 'LISTEN%%'",
            )
            assert listening == [(pid, 'LISTEN "pgjobs.jobs"')]
            assert await _rows(mon, "SELECT id FROM pgjobs.workers") == [(first,)]

            assert await _terminate(mon, [pid]) == 1

            async def taken_back() -> bool:
                new_pid = await _session_pid(mon, first)
                return worker.session.ready.is_set() and new_pid not in (None, pid)

            await until(taken_back, "the worker to take its id back")
            assert worker.session.worker_id == first
            new_pid = await _session_pid(mon, first)
            query = await _rows(mon, "SELECT query FROM pg_stat_activity WHERE pid = %s", new_pid)
            assert query == [('LISTEN "pgjobs.jobs"',)]
            # One row, not marked lost (a rescuer pass may have marked it for a moment).
            await asyncio.sleep(0.3)
            assert await _rows(mon, "SELECT id, lost_at FROM pgjobs.workers") == [(first, None)]

            await asyncio.sleep(1.5)  # let the claim loop go idle again
            await mon.execute("SELECT pgjobs.enqueue(task => 'conn.wake', args => '[2]')")
            await asyncio.wait_for(done.wait(), WAIT)
        return first

    first = asyncio.run(main())
    assert ran == [1, 2]
    rows = db.execute("SELECT worker_id, state FROM pgjobs.job_history ORDER BY id").fetchall()
    assert rows == [(first, "succeeded"), (first, "succeeded")]
    assert db.execute("SELECT count(*) FROM pgjobs.workers").fetchone() == (0,)


@pytest.mark.timeout(60)
def test_job_running_when_the_session_is_cut_carries_on_and_runs_once(
    app: pgjobs.App, db: psycopg.Connection[Any]
) -> None:
    """The worker takes its id back within the grace: its running job is not rescued, even
    long after the grace, and its ack (under the same id) lands."""
    runs: list[tuple[int, int]] = []

    async def main() -> tuple[int, int]:
        started = asyncio.Event()
        release = asyncio.Event()

        @app.task(name="conn.carry_on")
        async def carry_on() -> None:
            job = pgjobs.current_job()
            runs.append((job.attempt, job.worker_id))
            started.set()
            await release.wait()

        config = WorkerConfig(poll_interval=0.1, rescue_interval=0.1, rescue_grace=1.0)
        async with (
            running_worker(app, config) as worker,
            await psycopg.AsyncConnection.connect(app.database.dsn, autocommit=True) as mon,
        ):
            job_id = await carry_on.enqueue_async()
            await asyncio.wait_for(started.wait(), WAIT)
            first, pid = await _registered(worker, mon)
            assert await _terminate(mon, [pid]) == 1
            await asyncio.sleep(2.5)  # well past the grace, under rescuer passes every 0.1 s
            assert worker.session.worker_id == first
            assert await _rows(
                mon, "SELECT state, worker_id FROM pgjobs.jobs WHERE id = %s", job_id
            ) == [("running", first)]
            release.set()
            await asyncio.wait_for(worker.acker.flushed(), WAIT)
        return job_id, first

    job_id, first = asyncio.run(main())
    assert runs == [(1, first)]
    row = db.execute(
        "SELECT state, attempt, worker_id, errors FROM pgjobs.job_history WHERE id = %s",
        (job_id,),
    ).fetchone()
    assert row == ("succeeded", 1, first, [])


@pytest.mark.timeout(60)
def test_worker_that_cannot_get_its_session_back_stops_its_handlers_before_the_rescue(
    app: pgjobs.App, db: psycopg.Connection[Any]
) -> None:
    """New connections are refused, so the worker cannot take its id back: it cancels its
    async handlers (fencing) within the grace; the job is rescued only after that, and its
    second run starts after the first one ended."""
    events: list[tuple[str, int, float]] = []

    async def main() -> tuple[int, int]:
        started = asyncio.Event()

        @app.task(name="conn.fenced")
        async def fenced() -> None:
            job = pgjobs.current_job()
            events.append(("start", job.attempt, time.monotonic()))
            started.set()
            try:
                if job.attempt == 1:
                    await asyncio.sleep(60)
            finally:
                events.append(("end", job.attempt, time.monotonic()))

        grace = 2.0
        config = WorkerConfig(poll_interval=0.1, rescue_interval=0.1, rescue_grace=grace)
        async with (
            running_worker(app, config) as worker,
            await psycopg.AsyncConnection.connect(app.database.dsn, autocommit=True) as mon,
        ):
            job_id = await fenced.enqueue_async()
            await asyncio.wait_for(started.wait(), WAIT)
            first, pid = await _registered(worker, mon)
            await _allow_connections(app.database.dsn, False)
            try:
                assert await _terminate(mon, [pid]) == 1
                cut = time.monotonic()

                async def stopped() -> bool:
                    return any(kind == "end" for kind, _, _ in events)

                await until(stopped, "the handler to be cancelled", limit=grace)
                assert events[-1][2] - cut < grace * 0.8  # the reattach window and a bit
                rows = await _rows(mon, "SELECT state FROM pgjobs.jobs WHERE id = %s", job_id)
                assert rows == [("running",)]  # not yet rescued
            finally:
                await _allow_connections(app.database.dsn, True)

            await until(
                sync_check(lambda: [e[:2] for e in events][-1:] == [("end", 2)]),
                "the rescued job to run again",
            )
            second = worker.session.worker_id
            assert second not in (None, first)
            await asyncio.wait_for(worker.acker.flushed(), WAIT)
        return job_id, first

    job_id, first = asyncio.run(main())
    assert [e[:2] for e in events] == [("start", 1), ("end", 1), ("start", 2), ("end", 2)]
    state, attempt, errors = db.execute(
        "SELECT state, attempt, errors FROM pgjobs.job_history WHERE id = %s", (job_id,)
    ).fetchone()  # type: ignore[misc]
    assert (state, attempt) == ("succeeded", 2)
    assert [(e["kind"], e["attempt"]) for e in errors] == [("worker_lost", 1)]
    assert f"worker {first} was lost" in errors[0]["error"]


@pytest.mark.timeout(60)
def test_a_claim_that_returns_after_the_worker_gave_its_session_up_is_not_run(
    app: pgjobs.App, db: psycopg.Connection[Any]
) -> None:
    """A claim blocked in the database while the worker fences comes back with a job claimed
    under the given-up id: the worker must not run it (the rescue would hand it out while it
    ran). The job runs once, as attempt 2, after the rescue of attempt 1."""
    attempts: list[int] = []

    async def main() -> tuple[int, int]:
        @app.task(name="conn.guarded")
        async def guarded() -> None:
            attempts.append(pgjobs.current_job().attempt)

        config = WorkerConfig(poll_interval=0.1, rescue_interval=0.1, rescue_grace=2.0)
        async with (
            running_worker(app, config) as worker,
            await psycopg.AsyncConnection.connect(app.database.dsn, autocommit=True) as mon,
            await psycopg.AsyncConnection.connect(app.database.dsn) as locker,
        ):
            first, pid = await _registered(worker, mon)
            await mon.execute("INSERT INTO pgjobs.queues (name) VALUES ('default')")
            await asyncio.sleep(0.3)  # the claimer reads the queue list on its next poll
            await locker.execute("LOCK TABLE pgjobs.jobs IN ACCESS EXCLUSIVE MODE")

            async def claim_blocked() -> bool:
                rows = await _rows(
                    mon,
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock' AND query LIKE '%%attempt = j.attempt + 1%%'",
                )
                return rows == [(1,)]

            await until(claim_blocked, "the worker's claim to wait for the table lock")
            await _allow_connections(app.database.dsn, False)
            try:
                assert await _terminate(mon, [pid]) == 1
                await until(
                    sync_check(lambda: worker.session.worker_id is None), "the worker to fence"
                )
                cur = await locker.execute("SELECT pgjobs.enqueue(task => 'conn.guarded')")
                job_id = (await cur.fetchone())[0]  # type: ignore[index]
                await locker.commit()  # the blocked claim goes on and takes the job

                async def claimed_under_old_id() -> bool:
                    rows = await _rows(mon, "SELECT worker_id FROM pgjobs.jobs")
                    return rows == [(first,)]

                await until(claimed_under_old_id, "the job to be claimed under the old id")
                await asyncio.sleep(0.3)
                assert attempts == []
            finally:
                await _allow_connections(app.database.dsn, True)
            await until(sync_check(lambda: attempts == [2]), "the rescued job to run")
            await asyncio.wait_for(worker.acker.flushed(), WAIT)
        return job_id, first

    job_id, first = asyncio.run(main())
    assert attempts == [2]
    state, errors = db.execute(
        "SELECT state, errors FROM pgjobs.job_history WHERE id = %s", (job_id,)
    ).fetchone()  # type: ignore[misc]
    assert state == "succeeded"
    assert [(e["kind"], e["attempt"]) for e in errors] == [("worker_lost", 1)]
    assert f"worker {first} was lost" in errors[0]["error"]


async def _flow_with_kills(
    app: pgjobs.App, count: int, kill_session_every: int | None
) -> tuple[list[int], int]:
    """Run `count` jobs while terminating the worker's connections every 50 ms."""
    runs: list[int] = []

    @app.task(name="conn.flow", max_attempts=50)
    async def flow(n: int) -> None:
        runs.append(n)
        await asyncio.sleep(0.01)

    config = WorkerConfig(concurrency=4, poll_interval=0.1, rescue_interval=0.1)
    kills = 0
    async with (
        await psycopg.AsyncConnection.connect(app.database.dsn, autocommit=True) as mon,
        running_worker(app, config) as worker,
    ):
        await mon.execute(
            "SELECT pgjobs.enqueue(task => 'conn.flow', args => jsonb_build_array(g))"
            " FROM generate_series(1, %s) g",
            (count,),
        )
        deadline = time.monotonic() + 40
        rounds = 0
        while True:
            left = await _rows(mon, "SELECT count(*) FROM pgjobs.jobs")
            if left == [(0,)]:
                break
            assert time.monotonic() < deadline, f"jobs left: {left}"
            worker_id = worker.session.worker_id
            session_pid = await _session_pid(mon, worker_id) if worker_id is not None else None
            if session_pid is not None and len(runs) < count:
                rounds += 1
                pids = await _other_worker_pids(mon, session_pid)
                if kill_session_every and rounds % kill_session_every == 0:
                    pids.append(session_pid)
                kills += await _terminate(mon, pids)
            await asyncio.sleep(0.05)
    return runs, kills


@pytest.mark.timeout(90)
def test_claim_and_ack_connections_killed_while_jobs_flow(
    app: pgjobs.App, db: psycopg.Connection[Any]
) -> None:
    count = 300
    runs, kills = asyncio.run(_flow_with_kills(app, count, kill_session_every=None))

    assert kills >= 3  # the test did disturb the worker
    assert len(runs) >= count
    assert set(runs) == set(range(1, count + 1))
    states = db.execute("SELECT state, count(*) FROM pgjobs.job_history GROUP BY state").fetchall()
    assert states == [("succeeded", count)]


@pytest.mark.timeout(90)
def test_all_connections_killed_repeatedly_every_job_still_succeeds(
    app: pgjobs.App, db: psycopg.Connection[Any]
) -> None:
    count = 200
    runs, kills = asyncio.run(_flow_with_kills(app, count, kill_session_every=5))

    assert kills >= 3
    assert len(runs) >= count
    assert set(runs) == set(range(1, count + 1))
    states = db.execute("SELECT state, count(*) FROM pgjobs.job_history GROUP BY state").fetchall()
    assert states == [("succeeded", count)]
    args = db.execute(
        "SELECT count(DISTINCT args) FROM pgjobs.job_history WHERE state = 'succeeded'"
    ).fetchone()
    assert args == (count,)


@pytest.mark.timeout(60)
def test_job_claimed_under_a_live_worker_but_unknown_to_it_is_recovered(
    app: pgjobs.App, db: psycopg.Connection[Any]
) -> None:
    ran: list[int] = []

    async def main() -> None:
        @app.task(name="conn.lost_claim")
        async def lost_claim(n: int) -> None:
            ran.append(n)

        config = WorkerConfig(poll_interval=0.1, rescue_interval=0.1, heartbeat_interval=0.5)
        async with (
            running_worker(app, config) as worker,
            await psycopg.AsyncConnection.connect(app.database.dsn, autocommit=True) as mon,
        ):
            # What the database holds after a lost claim reply: the row was claimed for
            # this (live) worker, which never received it and so never runs or acks it.
            await mon.execute(
                "INSERT INTO pgjobs.jobs (task, args, state, attempt, started_at, worker_id)"
                " VALUES ('conn.lost_claim', '[1]', 'running', 1, now(), %s)",
                (worker.session.worker_id,),
            )
            await until(sync_check(lambda: ran == [1]), "the job to run", limit=5)

    asyncio.run(main())
    assert db.execute("SELECT state FROM pgjobs.job_history").fetchall() == [("succeeded",)]
