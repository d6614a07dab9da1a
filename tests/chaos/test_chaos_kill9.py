"""Scenario 1: kill -9 of a random worker process every few seconds while 4 drain 20,000 jobs.

Four `pgjobs worker` processes drain a mix of sync and async jobs. Every 1.5-3.5 s one of them,
chosen at random, is frozen (SIGSTOP) until none of its statements is executing, so that the
jobs the database says it runs are final; those are read, then it is killed with SIGKILL and
a fresh process takes its place. Only jobs held by a victim at its kill may run twice.
"""

from __future__ import annotations

import os
import random
import signal
import time

import chaosapp
import pytest
from harness import (
    Conn,
    Proc,
    Procs,
    check,
    enqueue_jobs,
    freeze,
    jobs_left,
    no_worker_rows,
    read_runs,
    record,
    running_on,
    wait_for,
    worker_ids,
)

pytestmark = pytest.mark.chaos

JOBS = int(os.environ.get("PGJOBS_CHAOS_JOBS", "20000"))
WORKERS = 4
CONCURRENCY = "10"


def _kill(db: Conn, victim: Proc) -> tuple[set[int], set[int], float | None] | None:
    """Freeze, read what the victim holds, kill -9, wait for the rescue of its jobs.
    Returns (its worker ids, the jobs it held, seconds to their rescue), or None if it
    could not be frozen cleanly (it was continued; try another time)."""
    if not freeze(db, victim):
        return None
    victim_ids = worker_ids(db).get(victim.pid, set())
    in_flight = running_on(db, victim_ids)
    victim.signal(signal.SIGKILL)
    killed_at = time.monotonic()
    assert victim.wait(10) == -signal.SIGKILL
    if not in_flight:
        return victim_ids, in_flight, None
    wait_for("the victim's jobs to be rescued", lambda: not running_on(db, victim_ids), 60)
    return victim_ids, in_flight, time.monotonic() - killed_at


@pytest.mark.timeout(480)
def test_kill_9_of_a_random_worker_every_few_seconds_loses_nothing(
    procs: Procs, db: Conn, chaos_dir: os.PathLike[str]
) -> None:
    seed = int(os.environ.get("PGJOBS_CHAOS_SEED", time.time_ns() % 1_000_000))
    print(f"seed {seed}")
    rng = random.Random(seed)
    tasks = [chaosapp.WORK, chaosapp.WORK_ASYNC]
    ids = enqueue_jobs(db, [(tasks[n % 2], {"ms": rng.uniform(10, 100)}) for n in range(JOBS)])

    live: list[Proc] = [
        procs.worker("--concurrency", CONCURRENCY, name=f"w{n}") for n in range(WORKERS)
    ]
    held: set[int] = set()  # jobs running on a victim when it was killed
    lost: set[int] = set()  # the victims' worker ids
    kills = 0
    rescue_times: list[float] = []
    deadline = time.monotonic() + 360
    next_kill = time.monotonic() + rng.uniform(1.5, 3.5)
    while jobs_left(db):
        assert time.monotonic() < deadline, f"{jobs_left(db)} jobs left after 360 s"
        for proc in live:
            assert proc.running(), f"{proc.appname} died by itself:\n{proc.output()[-3000:]}"
        if time.monotonic() < next_kill:
            time.sleep(0.1)
            continue
        registered = worker_ids(db)
        candidates = [proc for proc in live if registered.get(proc.pid)]
        if not candidates:
            time.sleep(0.1)
            continue
        victim = rng.choice(candidates)
        killed = _kill(db, victim)
        if killed is None:
            next_kill = time.monotonic() + 0.5
            continue
        victim_ids, in_flight, rescue = killed
        print(
            f"kill {kills + 1}: {victim.appname} workers {sorted(victim_ids)} held {len(in_flight)}"
        )
        kills += 1
        held |= in_flight
        lost |= victim_ids
        if rescue is not None:
            rescue_times.append(rescue)
        live.remove(victim)
        live.append(procs.worker("--concurrency", CONCURRENCY, name=f"w{kills}r"))
        next_kill = time.monotonic() + rng.uniform(1.5, 3.5)

    # A replacement still starting up has no signal handler yet: let it register first.
    wait_for("every worker to register", lambda: all(p.pid in worker_ids(db) for p in live), 60)
    for proc in live:
        proc.signal(signal.SIGTERM)
    for proc in live:
        assert proc.wait(60) == 0, proc.output()[-3000:]
    no_worker_rows(db)

    runs = read_runs(chaos_dir)  # type: ignore[arg-type]
    figures = check(db, ids, runs, lost_workers=lost, rerun_allowed=held)
    assert kills >= 5, f"only {kills} kills: the drain was too quick to test anything"
    assert figures.succeeded == JOBS
    slowest = max(rescue_times, default=0.0)
    record(
        "kill -9",
        figures,
        processes=WORKERS,
        kills=kills,
        restarts=kills,
        held_by_victims=len(held),
        slowest_rescue_s=round(slowest, 2),
    )
