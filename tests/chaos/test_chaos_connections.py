"""Scenario 3: a worker's database connections cut (pg_terminate_backend) while it lives on.

Four `pgjobs worker` processes drain 8,000 jobs; every 0.5-1 s every backend of one of them,
chosen at random, is terminated: its session (liveness lock and LISTEN), claim, ack and
maintenance connections at once. The process must carry on (it takes its worker id back, or
registers a new one); nothing may be lost, no job may run alongside itself, and a job may
run again only if it was running on a worker that lost its session.

The two companion tests pin down both ways out of a lost session, one job at a time: the
worker takes its id back within its rescue grace and its jobs carry on, or it cannot (the
database refuses new connections) and stops the job's handler before the grace ends, so the
rescued job's second run never overlaps the first.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import chaosapp
import pytest
from dbtools import allow_connections
from harness import (
    Conn,
    Proc,
    Procs,
    check,
    enqueue_jobs,
    jobs_left,
    no_worker_rows,
    read_runs,
    record,
    scalar,
    terminate,
    wait_for,
    worker_ids,
)

pytestmark = pytest.mark.chaos

JOBS = int(os.environ.get("PGJOBS_CHAOS_CUT_JOBS", "8000"))


@pytest.mark.timeout(300)
def test_cutting_a_live_workers_connections_repeatedly_loses_nothing(
    procs: Procs, db: Conn, chaos_dir: Path
) -> None:
    seed = int(os.environ.get("PGJOBS_CHAOS_SEED", time.time_ns() % 1_000_000))
    print(f"seed {seed}")
    rng = random.Random(seed)
    tasks = [chaosapp.WORK, chaosapp.WORK_ASYNC]
    ids = enqueue_jobs(db, [(tasks[n % 2], {"ms": rng.uniform(20, 120)}) for n in range(JOBS)])
    workers: list[Proc] = [procs.worker("--concurrency", "10", name=f"k{n}") for n in range(4)]
    wait_for("every worker to register", lambda: len(worker_ids(db)) == 4, 60)

    lost: set[int] = set()
    cuts = backends = 0
    deadline = time.monotonic() + 240
    while jobs_left(db):
        assert time.monotonic() < deadline, f"{jobs_left(db)} jobs left after 240 s"
        time.sleep(rng.uniform(0.5, 1.0))
        victim = rng.choice(workers)
        lost |= worker_ids(db).get(victim.pid, set())
        killed = terminate(db, victim.appname)
        lost |= worker_ids(db).get(victim.pid, set())  # a session opened meanwhile
        if killed:
            cuts += 1
            backends += killed
        for proc in workers:
            assert proc.running(), f"{proc.appname} died:\n{proc.output()[-3000:]}"

    # Each process is registered once, not marked lost; the rows of sessions it could not
    # take back are gone (the rescuers remove them with the rescue of their jobs).
    def registered_once() -> bool:
        now = worker_ids(db)
        marked = scalar(db, "SELECT count(*) FROM pgjobs.workers WHERE lost_at IS NOT NULL")
        return len(now) == 4 and all(len(ids_) == 1 for ids_ in now.values()) and not marked

    wait_for("one registration per worker process", registered_once, 60)
    for proc in workers:
        proc.signal(signal.SIGTERM)
    for proc in workers:
        assert proc.wait(60) == 0, proc.output()[-3000:]
    no_worker_rows(db)

    figures = check(db, ids, read_runs(chaos_dir), lost_workers=lost)
    assert cuts >= 8, f"only {cuts} cuts: the drain was too quick to test anything"
    record(
        "connections cut",
        figures,
        processes=len(workers),
        cuts=cuts,
        backends_terminated=backends,
    )


def _owner(procs: list[Proc], chaos_dir: Path, job: int) -> Proc:
    [first] = read_runs(chaos_dir).starts[job]
    return next(proc for proc in procs if proc.pid == first.pid)


@pytest.mark.timeout(120)
def test_a_worker_that_takes_its_session_back_keeps_running_its_jobs(
    procs: Procs, db: Conn, chaos_dir: Path
) -> None:
    """Every connection of the job's worker is cut while the job runs for 8 s, far past the
    worker's 2 s rescue grace: the worker takes its id back at once, so the job is not
    rescued and runs exactly once."""
    [job] = enqueue_jobs(db, [(chaosapp.WORK_ASYNC, {"ms": 8_000})])
    workers = [procs.worker("--rescue-grace", "2", name=f"w{n}") for n in range(2)]
    wait_for("both workers", lambda: len(worker_ids(db)) == 2, 60)
    wait_for("the job to start", lambda: bool(read_runs(chaos_dir).starts.get(job)), 30)
    owner = _owner(workers, chaos_dir, job)
    before = worker_ids(db)[owner.pid]
    assert terminate(db, owner.appname) >= 1
    wait_for("the job to finish", lambda: jobs_left(db) == 0, 60)

    runs = read_runs(chaos_dir)
    assert [(s.attempt, s.pid) for s in runs.starts[job]] == [(1, owner.pid)]
    assert worker_ids(db)[owner.pid] == before  # the same id, taken back
    figures = check(db, [job], runs)
    assert figures.reruns == 0
    assert "took its session back" in owner.output()
    record("session taken back", figures)


@pytest.mark.parametrize("task", [chaosapp.WORK_ASYNC, chaosapp.WORK])
@pytest.mark.timeout(120)
def test_a_worker_that_cannot_get_its_session_back_stops_the_job_before_it_is_rescued(
    procs: Procs, db: Conn, dsn: str, chaos_dir: Path, task: str
) -> None:
    """The job's worker loses every connection while the database refuses new ones, so it
    cannot take its id back. It cancels an async handler, or exits (code 75) to stop a sync
    one, before its 3 s grace ends; only then is the job rescued and run again elsewhere,
    never alongside the first run."""
    [job] = enqueue_jobs(db, [(task, {"ms": 10, "first_attempt_ms": 60_000})])
    workers = [procs.worker("--rescue-grace", "3", name=f"w{n}") for n in range(2)]
    wait_for("both workers", lambda: len(worker_ids(db)) == 2, 60)
    wait_for("the job to start", lambda: bool(read_runs(chaos_dir).starts.get(job)), 30)
    owner = _owner(workers, chaos_dir, job)
    lost = worker_ids(db)[owner.pid]
    allow_connections(dsn, False)
    try:
        assert terminate(db, owner.appname) >= 1
        cut = time.monotonic()
        if task == chaosapp.WORK:
            assert owner.wait(3) == 75, owner.output()[-3000:]
        else:
            wait_for("the handler to be cancelled", lambda: read_runs(chaos_dir).cancels(job), 3)
        stopped = time.monotonic() - cut
        assert scalar(db, "SELECT state::text FROM pgjobs.jobs WHERE id = %s", (job,)) == "running"
    finally:
        allow_connections(dsn, True)
    wait_for("the job to run again and finish", lambda: jobs_left(db) == 0, 60)

    runs = read_runs(chaos_dir)
    first, second = runs.starts[job]
    assert second.locked, "the rerun started while the first run was still running"
    figures = check(db, [job], runs, lost_workers=lost)
    assert figures.reruns == 1
    assert "could not take its session back" in owner.output()
    kind = "sync" if task == chaosapp.WORK else "async"
    record(
        f"session lost for good, {kind} handler",
        figures,
        stopped_after_cut_s=round(stopped, 2),
        rerun_after_first_start_s=round(second.at - first.at, 2),
    )
