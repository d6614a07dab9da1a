"""Scenario 5: SIGTERM to every worker in the middle of a drain.

Three `pgjobs worker --shutdown-grace 3` processes drain 4,000 short jobs (sync and async)
with, spread among them, 61 sync jobs of 1.5 s (they must finish within the grace) and 20
async jobs that wait for the test to release them (those running at the signal must be
cancelled and handed back). When a third of the
jobs are done, all three get SIGTERM at once. Right after they exit: every handler that
returned was acked, nothing is `running`, every unfinished job is `queued` for anyone, and no
worker is registered. A fresh worker then drains the rest and the usual invariants hold.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import chaosapp
import pytest
from harness import (
    Conn,
    Procs,
    check,
    enqueue_jobs,
    finished,
    no_worker_rows,
    read_runs,
    record,
    wait_for,
)

pytestmark = pytest.mark.chaos

SHORT = 4000
GRACE = "3"


@pytest.mark.timeout(240)
def test_sigterm_mid_drain_acks_what_finished_and_returns_the_rest(
    procs: Procs, db: Conn, chaos_dir: Path
) -> None:
    tasks = [chaosapp.WORK, chaosapp.WORK_ASYNC]
    jobs: list[tuple[str, dict[str, float | bool]]] = []
    long_at: list[int] = []
    for n in range(SHORT):  # the long jobs spread over the queue, so some run at the signal
        if n % 200 == 0:
            long_at.append(len(jobs))
            jobs.append((chaosapp.WORK_ASYNC, {"ms": 10, "hold": True}))
        if n % 66 == 0:
            jobs.append((chaosapp.WORK, {"ms": 1500}))
        jobs.append((tasks[n % 2], {"ms": 5 + n % 40}))
    ids = enqueue_jobs(db, jobs)
    long_async = {ids[i] for i in long_at}
    workers = [
        procs.worker("--concurrency", "10", "--shutdown-grace", GRACE, name=f"t{n}")
        for n in range(3)
    ]
    wait_for("a third of the jobs", lambda: finished(db) >= len(ids) // 3, 120)

    stopped_at = time.monotonic()
    for proc in workers:
        proc.signal(signal.SIGTERM)
    for proc in workers:
        assert proc.wait(60) == 0, proc.output()[-3000:]
    took = time.monotonic() - stopped_at

    # Right after the exits, before anything else touches the database:
    runs = read_runs(chaos_dir)
    rows = db.execute("SELECT id, state::text, worker_id FROM pgjobs.jobs").fetchall()
    assert [r for r in rows if r[1] != "queued" or r[2] is not None] == [], "stuck jobs"
    unfinished = {r[0] for r in rows}
    returned = {job for job in runs.starts if not runs.ends(job)}
    assert returned <= unfinished, "a job that started and never returned left the queue"
    done = set(ids) - unfinished
    history = dict(
        db.execute(
            "SELECT id, state::text FROM pgjobs.job_history WHERE id = ANY(%s)", (ids,)
        ).fetchall()
    )
    assert set(history) == done
    assert set(history.values()) <= {"succeeded"}
    completed = {job for job in runs.marks if runs.ends(job)}
    assert completed == done, "a handler returned but its outcome was not written (or vice versa)"
    handed_back = {job for job in returned if runs.cancels(job)}
    assert returned == handed_back, "a started job neither finished nor was cancelled"
    assert handed_back <= long_async, "a job that could finish within the grace was cut short"
    assert handed_back, "no long async job was running at the SIGTERM: nothing was handed back"
    no_worker_rows(db)
    print(
        f"SIGTERM: {len(done)} done, {len(handed_back)} handed back, "
        f"{len(unfinished) - len(handed_back)} never started; exited {took:.2f}s after the signal"
    )

    (chaos_dir / "release").touch()  # the held jobs run through from now on
    drain = procs.worker("--burst", "--concurrency", "20", name="drain")
    assert drain.wait(120) == 0, drain.output()[-3000:]
    figures = check(db, ids, read_runs(chaos_dir))
    assert figures.duplicates == 0
    assert figures.reruns == len(handed_back)
    record(
        "SIGTERM mid-drain",
        figures,
        processes=len(workers),
        acked_before_exit=len(done),
        handed_back=len(handed_back),
        exit_s=round(took, 2),
    )
