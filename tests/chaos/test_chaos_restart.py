"""Scenario 2: Postgres restarted (fast shutdown) twice in the middle of a drain.

The machine's server is shared, so this test starts a private server of the same major
version, migrates it and points the workers at it. Three `pgjobs worker` processes drain
6,000 jobs while the server is restarted twice with `pg_ctl restart -m fast`, which ends
every session. A fourth worker serves only the queue `wake` and polls once an hour: a job
enqueued there after the restarts and started within seconds proves that the worker's
listener came back and LISTENs again.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import chaosapp
import psycopg
import pytest
from harness import (
    Procs,
    ResilientConn,
    check,
    enqueue_jobs,
    finished,
    jobs_left,
    no_worker_rows,
    read_runs,
    record,
    scalar,
    wait_for,
    worker_ids,
)
from private_server import PrivateServer, binaries, private_server

import pgjobs
from pgjobs.migrate import apply_migrations

pytestmark = pytest.mark.chaos

JOBS = int(os.environ.get("PGJOBS_CHAOS_RESTART_JOBS", "6000"))
RESTARTS = 2


@pytest.fixture
def server(server_major: int) -> Iterator[PrivateServer]:
    """A private server of the suite's major version (else the newest one available)."""
    major = server_major if binaries(server_major) else 18
    with private_server(major) as private:
        with psycopg.connect(private.dsn(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE chaos")
        with psycopg.connect(private.dsn("chaos"), autocommit=True) as conn:
            apply_migrations(conn, "pgjobs")
            print(f"private server: PostgreSQL {conn.info.server_version}")
        yield private


@pytest.fixture
def rprocs(server: PrivateServer, tmp_path: Path, chaos_dir: Path) -> Iterator[Procs]:
    manager = Procs(server.dsn("chaos"), tmp_path, chaos_dir)
    try:
        yield manager
    finally:
        manager.cleanup()
        print("----- private server log (tail)")
        print(server.server_log()[-3000:])


def _enqueue_wake(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return enqueue_jobs(conn, [(chaosapp.WORK, {})], queue="wake")[0]


def _done(db: Any, job_id: int) -> bool:
    return bool(scalar(db, "SELECT count(*) FROM pgjobs.job_history WHERE id = %s", (job_id,)))


@pytest.mark.timeout(300)
def test_fast_restarts_mid_drain_lose_nothing_and_listeners_listen_again(
    server: PrivateServer, rprocs: Procs, chaos_dir: Path
) -> None:
    dsn = server.dsn("chaos")
    rng = random.Random(int(os.environ.get("PGJOBS_CHAOS_SEED", "2")))
    tasks = [chaosapp.WORK, chaosapp.WORK_ASYNC]
    with psycopg.connect(dsn, autocommit=True) as conn:
        ids = enqueue_jobs(conn, [(tasks[n % 2], {"ms": rng.uniform(5, 60)}) for n in range(JOBS)])
    db = ResilientConn(dsn)

    listener = rprocs.script_worker(
        "--queue", "wake", "--poll-interval", "3600", "--concurrency", "2", name="listener"
    )
    workers = [
        rprocs.worker("--queue", "default", "--concurrency", "10", name=f"r{n}") for n in range(3)
    ]
    everyone = [listener, *workers]
    wait_for("every worker to register", lambda: len(worker_ids(db)) == 4, 60)

    # Before any restart: the listener wakes on NOTIFY (it would poll only in an hour).
    wake_ids = [_enqueue_wake(dsn)]
    wait_for("the first wake-up job", lambda: _done(db, wake_ids[0]), 20)

    lost: set[int] = set()
    restart_times: list[float] = []
    for number in range(RESTARTS):
        threshold = JOBS * (number + 1) // (RESTARTS + 2)
        wait_for(f"{threshold} jobs done", lambda t=threshold: finished(db) >= t, 120)  # type: ignore[misc]
        before = worker_ids(db)
        lost |= {wid for ids_ in before.values() for wid in ids_}
        started = time.monotonic()
        server.restart("fast")
        restart_times.append(time.monotonic() - started)
        print(f"restart {number + 1}: {restart_times[-1]:.2f}s, {jobs_left(db)} jobs left")
        for proc in everyone:
            assert proc.running(), f"{proc.appname} died in the restart:\n{proc.output()[-3000:]}"

    wait_for("the drain to finish", lambda: jobs_left(db) == 0, 180)
    for proc in everyone:
        assert proc.running(), f"{proc.appname} died:\n{proc.output()[-3000:]}"

    # Every process is registered again, the listener included: under its old id if it took
    # its session back within its rescue grace, else under a new one (the old row is gone).
    def all_back() -> bool:
        now = worker_ids(db)
        marked = scalar(db, "SELECT count(*) FROM pgjobs.workers WHERE lost_at IS NOT NULL")
        return all(len(now.get(p.pid, ())) == 1 for p in everyone) and not marked

    wait_for("every worker to be registered again", all_back, 60)
    taken_back = sum(1 for ids_ in worker_ids(db).values() if ids_ & lost)
    time.sleep(2)  # the wake-up each session gives itself on reconnecting is spent by now
    wake_ids.append(_enqueue_wake(dsn))
    took = wait_for("the wake-up job after the restarts", lambda: _done(db, wake_ids[1]), 20)
    print(f"after the restarts a NOTIFY woke the listener: job done {took:.2f}s after enqueue")
    wake_worker = scalar(
        db, "SELECT worker_id FROM pgjobs.job_history WHERE id = %s", (wake_ids[1],)
    )
    assert wake_worker in worker_ids(db)[listener.pid]

    for proc in everyone:
        proc.signal(signal.SIGTERM)
    for proc in everyone:
        assert proc.wait(60) == 0, proc.output()[-3000:]
    db.close()
    with psycopg.connect(dsn, autocommit=True) as conn:
        no_worker_rows(conn)
        figures = check(conn, ids + wake_ids, read_runs(chaos_dir), lost_workers=lost)
    assert figures.succeeded == JOBS + 2
    record(
        "postgres restart",
        figures,
        processes=len(everyone),
        restarts=RESTARTS,
        restart_s=[round(t, 2) for t in restart_times],
        ids_taken_back=taken_back,
        wake_after_restart_s=round(took, 2),
    )


def _leaders(db: Any) -> list[str]:
    """application_name of the backend holding the cron leader lock (one, or none)."""
    rows = db.execute(
        "SELECT holder_application FROM pgjobs.cron_leader WHERE status = 'leader'"
    ).fetchall()
    return [row[0] for row in rows]


def _ticks_since(db: Any, since: Any) -> int:
    query = "SELECT count(*) FROM pgjobs.cron_runs WHERE schedule = %s AND enqueued_at > %s"
    return int(scalar(db, query, (chaosapp.TICK_SCHEDULE, since)))


@pytest.mark.skipif(
    not hasattr(pgjobs.App, "every"),
    reason="cron (issue 3) is not in this checkout: the leader re-election check needs it",
)
@pytest.mark.timeout(240)
def test_cron_leader_is_reelected_after_a_restart_and_no_tick_fires_twice(
    server: PrivateServer, rprocs: Procs, chaos_dir: Path
) -> None:
    dsn = server.dsn("chaos")
    db = ResilientConn(dsn)
    cron = {"PGJOBS_CHAOS_CRON": "1"}  # chaosapp then declares an every-second schedule
    workers = [rprocs.worker("--concurrency", "4", name=f"c{n}", env=cron) for n in range(2)]
    wait_for("a cron leader", lambda: len(_leaders(db)) == 1, 60)
    start = scalar(db, "SELECT now()")
    wait_for("three ticks", lambda: _ticks_since(db, start) >= 3, 30)
    before = {wid for ids_ in worker_ids(db).values() for wid in ids_}
    first_leader = _leaders(db)[0]

    server.restart("fast")
    restarted = scalar(db, "SELECT now()")
    took = wait_for("a cron leader after the restart", lambda: len(_leaders(db)) == 1, 60)
    wait_for("three ticks after the restart", lambda: _ticks_since(db, restarted) >= 3, 60)
    leader = _leaders(db)[0]
    print(f"leader {first_leader} before the restart, {leader} after ({took:.2f}s to re-elect)")
    assert leader in {proc.appname for proc in workers}
    for proc in workers:
        assert proc.running(), proc.output()[-3000:]
        proc.signal(signal.SIGTERM)
    for proc in workers:
        assert proc.wait(60) == 0, proc.output()[-3000:]

    # Burst workers neither register schedules nor lead; the env registers the tick task.
    drain = rprocs.worker("--burst", name="drain", env=cron)
    assert drain.wait(60) == 0, drain.output()[-3000:]
    assert _leaders(db) == []
    dupes = scalar(
        db,
        "SELECT count(*) - count(DISTINCT tick_at) FROM pgjobs.cron_runs WHERE schedule = %s",
        (chaosapp.TICK_SCHEDULE,),
    )
    assert dupes == 0, "a tick was enqueued twice"
    ids = [row[0] for row in db.execute("SELECT job_id FROM pgjobs.cron_runs").fetchall()]
    db.close()
    with psycopg.connect(dsn, autocommit=True) as conn:
        no_worker_rows(conn)
        figures = check(conn, ids, read_runs(chaos_dir), lost_workers=before)
    record("cron leader across a restart", figures, restarts=1, reelected_after_s=round(took, 2))
