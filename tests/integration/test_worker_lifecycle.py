"""A long-running in-process worker: NOTIFY wake-up, polling, paused queues, graceful stop."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

import psycopg
import pytest
from worker_harness import WAIT, running_worker, sync_check, until

import pgjobs
from pgjobs import db as pgdb
from pgjobs.worker import Worker, WorkerConfig
from pgjobs.worker.rescuer import Rescuer

NAMESPACE = pgdb.lock_namespace("pgjobs", "worker")


async def _connect(app: pgjobs.App) -> psycopg.AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(app.database.dsn, autocommit=True)


async def _fetchone(conn: psycopg.AsyncConnection[Any], query: str, *params: Any) -> Any:
    cur = await conn.execute(query, params)
    return await cur.fetchone()


@pytest.mark.timeout(60)
def test_idle_worker_is_woken_by_notify(app: pgjobs.App, db: psycopg.Connection[Any]) -> None:
    """poll_interval=30: within the 10 s wait, only a NOTIFY can make the worker claim."""
    ran: list[int] = []

    async def main() -> None:
        done = asyncio.Event()

        @app.task(name="life.wake")
        async def wake(n: int) -> None:
            ran.append(n)
            done.set()

        config = WorkerConfig(poll_interval=30)
        async with running_worker(app, config), await _connect(app) as other:
            await asyncio.sleep(0.2)  # let the claim loop find nothing and go idle
            # Enqueued from another connection, into a queue the worker has never seen.
            await other.execute("SELECT pgjobs.enqueue(task => 'life.wake', args => '[1]')")
            await asyncio.wait_for(done.wait(), WAIT)
            done.clear()
            await asyncio.sleep(1.5)  # idle again, past the queue-list refresh
            await other.execute("SELECT pgjobs.enqueue(task => 'life.wake', args => '[2]')")
            await asyncio.wait_for(done.wait(), WAIT)

    asyncio.run(main())
    assert ran == [1, 2]
    rows = db.execute("SELECT state FROM pgjobs.job_history ORDER BY id").fetchall()
    assert rows == [("succeeded",), ("succeeded",)]


@pytest.mark.timeout(60)
def test_transactional_enqueue_wakes_worker_only_on_commit(
    app: pgjobs.App, db: psycopg.Connection[Any]
) -> None:
    ran: list[str] = []

    async def main() -> None:
        done = asyncio.Event()

        @app.task(name="life.tx")
        async def tx(label: str) -> None:
            ran.append(label)
            done.set()

        async with (
            running_worker(app, WorkerConfig(poll_interval=30)),
            await _connect(app) as other,
        ):
            await asyncio.sleep(0.2)
            await other.set_autocommit(False)
            await tx.options(conn=other).enqueue_async("rolled back")
            await other.rollback()
            await tx.options(conn=other).enqueue_async("committed")
            await asyncio.sleep(0.3)
            assert ran == []  # not visible, and not notified, before the commit
            await other.commit()
            await asyncio.wait_for(done.wait(), WAIT)

    asyncio.run(main())
    assert ran == ["committed"]


@pytest.mark.timeout(60)
def test_poll_fallback_picks_up_a_job_that_becomes_due(
    app: pgjobs.App, db: psycopg.Connection[Any]
) -> None:
    """A job enqueued for the near future sends no NOTIFY when it becomes due: polling
    finds it."""
    ran: list[int] = []

    async def main() -> None:
        done = asyncio.Event()

        @app.task(name="life.poll")
        async def poll(n: int) -> None:
            ran.append(n)
            done.set()

        async with (
            running_worker(app, WorkerConfig(poll_interval=0.1)),
            await _connect(app) as other,
        ):
            await other.execute(
                "SELECT pgjobs.enqueue(task => 'life.poll', args => '[5]',"
                " run_at => now() + interval '0.5 seconds')"
            )
            await asyncio.wait_for(done.wait(), WAIT)

    asyncio.run(main())
    assert ran == [5]
    row = db.execute("SELECT state, started_at >= run_at FROM pgjobs.job_history").fetchone()
    assert row == ("succeeded", True)


@pytest.mark.timeout(60)
def test_paused_queue_is_not_claimed_until_resumed(
    app: pgjobs.App, db: psycopg.Connection[Any]
) -> None:
    ran: list[str] = []

    @app.task(name="life.paused")
    def record(label: str) -> None:
        ran.append(label)

    held = [record.options(queue="q").enqueue(f"q{n}") for n in range(3)]
    free = record.options(queue="other").enqueue("other")
    db.execute("UPDATE pgjobs.queues SET paused = true WHERE name = 'q'")

    app.run_worker(burst=True, install_signal_handlers=False)

    assert ran == ["other"]
    assert db.execute("SELECT state FROM pgjobs.job_history WHERE id = %s", (free,)).fetchone() == (
        "succeeded",
    )
    rows = db.execute(
        "SELECT state, attempt, worker_id FROM pgjobs.jobs WHERE id = ANY(%s)", (held,)
    ).fetchall()
    assert rows == [("queued", 0, None)] * 3

    db.execute("UPDATE pgjobs.queues SET paused = false WHERE name = 'q'")
    app.run_worker(burst=True, install_signal_handlers=False)

    assert sorted(ran) == ["other", "q0", "q1", "q2"]
    assert db.execute("SELECT count(*) FROM pgjobs.jobs").fetchone() == (0,)


@pytest.mark.timeout(60)
def test_running_worker_notices_pause_and_resume(
    app: pgjobs.App, db: psycopg.Connection[Any]
) -> None:
    """A long-running worker re-reads paused queues (every poll, at most once a second)."""
    ran: list[str] = []

    async def main() -> None:
        @app.task(name="life.pause_live")
        async def record(label: str) -> None:
            ran.append(label)

        async with (
            running_worker(app, WorkerConfig(poll_interval=0.1)),
            await _connect(app) as other,
        ):
            await other.execute(
                "INSERT INTO pgjobs.queues (name, paused) VALUES ('q', true), ('r', false)"
            )
            await asyncio.sleep(1.5)  # past the worker's queue-list refresh
            await record.options(queue="q").enqueue_async("paused-job")
            await record.options(queue="r").enqueue_async("free-job")
            await until(sync_check(lambda: ran == ["free-job"]), "the unpaused queue to run")
            await asyncio.sleep(1.5)  # several polls and refreshes: still paused
            assert ran == ["free-job"]
            state = await _fetchone(other, "SELECT state FROM pgjobs.jobs WHERE queue = 'q'")
            assert state == ("queued",)
            await other.execute("UPDATE pgjobs.queues SET paused = false WHERE name = 'q'")
            await until(sync_check(lambda: len(ran) == 2), "the resumed queue to run")

    asyncio.run(main())
    assert ran == ["free-job", "paused-job"]


@pytest.mark.timeout(60)
def test_stop_with_grace_lets_a_running_async_job_finish(
    app: pgjobs.App, db: psycopg.Connection[Any]
) -> None:
    events: list[str] = []

    async def main() -> None:
        started = asyncio.Event()

        @app.task(name="life.finish")
        async def finish() -> None:
            events.append("started")
            started.set()
            await asyncio.sleep(0.5)
            events.append("finished")

        job_id = await finish.enqueue_async()
        worker = Worker(app, WorkerConfig(shutdown_grace=30, poll_interval=0.1))
        runner = asyncio.create_task(worker.run_async())
        await asyncio.wait_for(started.wait(), WAIT)
        worker.stop()
        await asyncio.wait_for(runner, 30)
        assert worker.exit_code == 0
        row = await _fetchone_db(app, "SELECT state FROM pgjobs.job_history WHERE id = %s", job_id)
        assert row == ("succeeded",)

    asyncio.run(main())
    assert events == ["started", "finished"]
    assert db.execute("SELECT count(*) FROM pgjobs.jobs").fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM pgjobs.workers").fetchone() == (0,)


async def _fetchone_db(app: pgjobs.App, query: str, *params: Any) -> Any:
    async with await _connect(app) as conn:
        return await _fetchone(conn, query, *params)


@pytest.mark.timeout(60)
def test_stop_past_grace_cancels_async_job_and_hands_it_back(
    app: pgjobs.App, db: psycopg.Connection[Any]
) -> None:
    events: list[str] = []

    async def main() -> tuple[int, int]:
        started = asyncio.Event()

        @app.task(name="life.handback")
        async def hand_back() -> None:
            events.append("started")
            started.set()
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                events.append("cancelled")
                raise

        @app.task(name="life.done")
        async def done_quickly() -> None:
            events.append("quick")

        job_id = await hand_back.enqueue_async()
        worker = Worker(app, WorkerConfig(shutdown_grace=0.1, poll_interval=0.1))
        runner = asyncio.create_task(worker.run_async())
        await asyncio.wait_for(started.wait(), WAIT)
        worker_id = worker.session.worker_id
        assert worker_id is not None
        async with await _connect(app) as conn:
            row = await _fetchone(conn, "SELECT state, worker_id FROM pgjobs.jobs")
            assert row == ("running", worker_id)
            assert await _fetchone(conn, "SELECT id FROM pgjobs.workers") == (worker_id,)
        worker.stop()
        await asyncio.wait_for(runner, 30)
        assert worker.exit_code == 0
        return job_id, worker_id

    job_id, _worker_id = asyncio.run(main())
    assert events == ["started", "cancelled"]
    row = db.execute(
        "SELECT state, worker_id, attempt, run_at <= now(), errors -> -1 ->> 'kind'"
        " FROM pgjobs.jobs WHERE id = %s",
        (job_id,),
    ).fetchone()
    # A clean hand-back gives the attempt back, and says so in the job's records.
    assert row == ("queued", None, 0, True, "released")
    assert db.execute("SELECT count(*) FROM pgjobs.jobs WHERE state = 'running'").fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM pgjobs.workers").fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM pgjobs.job_history").fetchone() == (0,)


@pytest.mark.timeout(60)
def test_handed_back_job_runs_again_on_next_worker(
    app: pgjobs.App, db: psycopg.Connection[Any]
) -> None:
    attempts: list[int] = []

    async def main() -> None:
        started = asyncio.Event()

        @app.task(name="life.again")
        async def again() -> None:
            attempts.append(pgjobs.current_job().attempt)
            started.set()
            if len(attempts) == 1:
                await asyncio.sleep(30)

        await again.enqueue_async()
        worker = Worker(app, WorkerConfig(shutdown_grace=0.1))
        runner = asyncio.create_task(worker.run_async())
        await asyncio.wait_for(started.wait(), WAIT)
        worker.stop()
        await asyncio.wait_for(runner, 30)

    asyncio.run(main())
    app.run_worker(burst=True, install_signal_handlers=False)
    assert attempts == [1, 1]  # the hand-back did not count the attempt
    assert db.execute("SELECT state, attempt FROM pgjobs.job_history").fetchone() == (
        "succeeded",
        1,
    )


def test_burst_worker_leaves_no_connection_or_worker_row_behind(
    app: pgjobs.App, db: psycopg.Connection[Any]
) -> None:
    @app.task(name="life.noop")
    def noop() -> None:
        pass

    db.execute("SELECT pgjobs.enqueue(task => 'life.noop') FROM generate_series(1, 5)")
    app.run_worker(burst=True, install_signal_handlers=False)

    assert db.execute("SELECT count(*) FROM pgjobs.job_history").fetchone() == (5,)
    assert db.execute("SELECT count(*) FROM pgjobs.workers").fetchone() == (0,)

    def leftover() -> int:
        row = db.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND application_name = 'pgjobs'"
        ).fetchone()
        assert row is not None
        return int(row[0])

    # Backends exit just after their client closes: allow them a moment to go.
    deadline = time.monotonic() + WAIT
    while leftover() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert leftover() == 0


@pytest.mark.timeout(60)
def test_stop_past_grace_leaves_a_sync_job_to_the_rescuer(
    app: pgjobs.App, db: psycopg.Connection[Any]
) -> None:
    """A thread cannot be cancelled: run_async returns with the sync handler still running.
    The job stays `running` under the old worker id, whose lock went with the session, so
    the first rescue pass after the worker's rescue grace hands it back; the late handler's
    result is never recorded.
    (`Worker.run()` exits the process at this point, which ends the thread too.)"""
    started = threading.Event()
    release = threading.Event()
    finished = threading.Event()

    @app.task(name="life.sync_overrun")
    def overrun() -> None:
        started.set()
        release.wait(10)
        finished.set()

    job_id = overrun.enqueue()

    async def main() -> int:
        worker = Worker(app, WorkerConfig(shutdown_grace=0.1, rescue_grace=0.3))
        runner = asyncio.create_task(worker.run_async())
        assert await asyncio.to_thread(started.wait, WAIT)
        worker_id = worker.session.worker_id
        assert worker_id is not None
        worker.stop()
        await asyncio.wait_for(runner, 30)
        assert worker.exit_code == 0
        return worker_id

    worker_id = asyncio.run(main())
    assert not finished.is_set()
    row = db.execute("SELECT state, worker_id FROM pgjobs.jobs WHERE id = %s", (job_id,))
    assert row.fetchone() == ("running", worker_id)
    lock_held = db.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1"
        " AND classid = %s::oid AND objid = %s::oid"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        (NAMESPACE, worker_id),
    ).fetchone()
    assert lock_held == (0,)

    async def rescue() -> list[int]:
        rescuer = Rescuer(
            app.database.queries,
            lambda: pgdb.connect_async(app.database.dsn),
            app.clock,
            lock_namespace=NAMESPACE,
            channel=pgdb.notify_channel("pgjobs"),
        )
        try:
            first = await rescuer.run_once(app.clock.now())  # sees the lock gone: marks it
            await asyncio.sleep(0.4)
            return [first, await rescuer.run_once(app.clock.now())]
        finally:
            await rescuer.close()

    assert asyncio.run(rescue()) == [0, 1]
    release.set()
    assert finished.wait(WAIT)
    row = db.execute("SELECT state, worker_id, errors FROM pgjobs.jobs WHERE id = %s", (job_id,))
    state, new_worker_id, errors = row.fetchone()  # type: ignore[misc]
    assert (state, new_worker_id) == ("queued", None)
    assert [e["kind"] for e in errors] == ["worker_lost"]
    assert db.execute("SELECT count(*) FROM pgjobs.job_history").fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM pgjobs.workers").fetchone() == (0,)


@pytest.mark.timeout(60)
def test_stop_called_from_a_sync_handler_thread(
    app: pgjobs.App, db: psycopg.Connection[Any]
) -> None:
    workers: list[Worker] = []
    ran: list[int] = []

    @app.task(name="life.stopper")
    def stopper(n: int) -> None:
        ran.append(n)
        workers[0].stop()  # from a pool thread, not the event loop

    job_id = stopper.enqueue(1)

    async def main() -> None:
        worker = Worker(app, WorkerConfig(poll_interval=30))
        workers.append(worker)
        await asyncio.wait_for(worker.run_async(), WAIT)
        assert worker.exit_code == 0

    asyncio.run(main())
    assert ran == [1]
    row = db.execute("SELECT state FROM pgjobs.job_history WHERE id = %s", (job_id,)).fetchone()
    assert row == ("succeeded",)
    assert db.execute("SELECT count(*) FROM pgjobs.workers").fetchone() == (0,)


@pytest.mark.timeout(60)
def test_job_handed_back_at_shutdown_wakes_another_worker(
    app: pgjobs.App, db: psycopg.Connection[Any]
) -> None:
    """The hand-back sends a NOTIFY: an idle worker with poll_interval=30 takes the job."""
    runs: list[tuple[int, int]] = []

    async def main() -> tuple[int, int]:
        started = asyncio.Event()
        rerun = asyncio.Event()

        @app.task(name="life.pass_on")
        async def pass_on() -> None:
            job = pgjobs.current_job()
            runs.append((job.attempt, job.worker_id))
            if len(runs) == 1:
                started.set()
                await asyncio.sleep(30)
            rerun.set()

        await pass_on.enqueue_async()
        first = Worker(app, WorkerConfig(shutdown_grace=0.1, poll_interval=30))
        first_runner = asyncio.create_task(first.run_async())
        await asyncio.wait_for(started.wait(), WAIT)
        async with running_worker(app, WorkerConfig(poll_interval=30)) as second:
            await asyncio.sleep(0.3)  # the second worker found nothing and is idle
            assert runs == [(1, first.session.worker_id)]
            first.stop()
            await asyncio.wait_for(first_runner, 30)
            await asyncio.wait_for(rerun.wait(), WAIT)
            second_id = second.session.worker_id
        assert second_id is not None
        return runs[0][1], second_id

    first_id, second_id = asyncio.run(main())
    assert runs == [(1, first_id), (1, second_id)]  # handed back: the attempt is given back
    row = db.execute("SELECT state, attempt, worker_id FROM pgjobs.job_history").fetchone()
    assert row == ("succeeded", 1, second_id)


@pytest.mark.timeout(60)
def test_two_workers_share_the_queue_and_run_each_job_once(
    app: pgjobs.App, db: psycopg.Connection[Any]
) -> None:
    seen: list[tuple[int, int]] = []

    @app.task(name="life.shared")
    async def shared(n: int) -> None:
        seen.append((n, pgjobs.current_job().worker_id))
        await asyncio.sleep(0.002)

    shared.enqueue_many([{"n": n} for n in range(400)])

    async def main() -> tuple[int, int]:
        workers = [Worker(app, WorkerConfig(concurrency=4, burst=True)) for _ in range(2)]
        await asyncio.wait_for(asyncio.gather(*(w.run_async() for w in workers)), 30)
        assert [w.exit_code for w in workers] == [0, 0]
        return workers[0].processed, workers[1].processed

    processed = asyncio.run(main())
    assert sorted(n for n, _ in seen) == list(range(400))  # each job exactly once
    assert sum(processed) == 400
    assert len({worker_id for _, worker_id in seen}) == len([p for p in processed if p])
    assert db.execute("SELECT count(*) FROM pgjobs.jobs").fetchone() == (0,)
    assert db.execute(
        "SELECT count(*) FROM pgjobs.job_history WHERE state = 'succeeded' AND attempt = 1"
    ).fetchone() == (400,)


@pytest.mark.timeout(60)
def test_heartbeat_updates_the_worker_row(app: pgjobs.App, db: psycopg.Connection[Any]) -> None:
    async def main() -> None:
        config = WorkerConfig(heartbeat_interval=0.1, poll_interval=30)
        async with running_worker(app, config) as worker, await _connect(app) as conn:
            worker_id = worker.session.worker_id
            first = await _fetchone(
                conn, "SELECT heartbeat_at, pid FROM pgjobs.workers WHERE id = %s", worker_id
            )
            assert first is not None
            assert first[1] == os.getpid()

            async def beaten() -> bool:
                row = await _fetchone(
                    conn, "SELECT heartbeat_at FROM pgjobs.workers WHERE id = %s", worker_id
                )
                return row is not None and row[0] > first[0]

            await until(beaten, "a heartbeat")

    asyncio.run(main())
    assert db.execute("SELECT count(*) FROM pgjobs.workers").fetchone() == (0,)
