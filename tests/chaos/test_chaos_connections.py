"""Scenario 3: a worker's database connections cut (pg_terminate_backend) while it lives on.

Four `pgjobs worker` processes drain 8,000 jobs; every 0.5-1 s every backend of one of them,
chosen at random, is terminated: its session (liveness lock and LISTEN), claim, ack and
maintenance connections at once. The process must carry on (it registers again under a new
id); nothing may be lost, and a job may run again only if it was running on the worker that
lost its session.

The companion test shows, deterministically, what pgjobs cannot promise today: a handler
still running when its worker's session is cut is not stopped, while its job is rescued and
run again elsewhere, so the two runs overlap.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import chaosapp
import pytest
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

    # Each process is registered again, and the rows of its lost sessions are gone (the
    # rescuers remove them with the rescue of their jobs).
    def registered_once() -> bool:
        now = worker_ids(db)
        return len(now) == 4 and all(len(ids_) == 1 and not ids_ & lost for ids_ in now.values())

    wait_for("one registration per worker process", registered_once, 60)
    for proc in workers:
        proc.signal(signal.SIGTERM)
    for proc in workers:
        assert proc.wait(60) == 0, proc.output()[-3000:]
    no_worker_rows(db)

    figures = check(db, ids, read_runs(chaos_dir), lost_workers=lost, concurrency_allowed=True)
    assert cuts >= 8, f"only {cuts} cuts: the drain was too quick to test anything"
    record(
        "connections cut",
        figures,
        processes=len(workers),
        cuts=cuts,
        backends_terminated=backends,
    )


@pytest.mark.xfail(
    strict=True,
    reason="pgjobs treats a lost session as a dead worker: its jobs are rescued and rerun "
    "while the live process's handlers still run (no fencing); see the README's Reliability",
)
@pytest.mark.timeout(120)
def test_a_job_never_runs_concurrently_with_itself_when_its_workers_session_is_cut(
    procs: Procs, db: Conn, chaos_dir: Path
) -> None:
    [job] = enqueue_jobs(db, [(chaosapp.WORK_ASYNC, {"ms": 10, "first_attempt_ms": 10_000})])
    victim = procs.worker("--concurrency", "2", name="victim")
    other = procs.worker("--concurrency", "2", name="other")
    wait_for("both workers", lambda: len(worker_ids(db)) == 2, 60)

    def started() -> bool:
        return bool(read_runs(chaos_dir).starts.get(job))

    wait_for("the job to start", started, 30)
    [first] = read_runs(chaos_dir).starts[job]
    owner = victim if first.pid == victim.pid else other
    terminate(db, owner.appname)  # the process lives on; its handler keeps running

    def finished() -> bool:
        return jobs_left(db) == 0 and len(read_runs(chaos_dir).ends(job)) == 2

    wait_for("both runs to finish", finished, 60)
    runs = read_runs(chaos_dir)
    second = runs.starts[job][-1]
    print(f"run 1 started {first.at:.3f}, run 2 started {second.at:.3f}")
    assert second.locked, "the rerun started while the first run was still running"
