"""Scenario 4: handlers that hang forever, leak memory until killed, or end the process.

Each poison job runs alongside ordinary jobs, which must all succeed; the poison job must
end dead, with its reason recorded, after max_attempts (2, or 3 for os._exit) instead of
looping forever, and nothing else may be lost.
"""

from __future__ import annotations

import contextlib
import os
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
    descendants,
    enqueue_jobs,
    errors_of,
    jobs_left,
    read_runs,
    record,
    rss_bytes,
    scalar,
    wait_for,
    worker_ids,
)

pytestmark = pytest.mark.chaos

OOM_BOUND = 400 * 1024 * 1024  # the test plays the kernel's OOM killer at this RSS


def _ordinary(db: Conn, count: int) -> list[int]:
    return enqueue_jobs(db, [(chaosapp.WORK, {"ms": 20})] * count)


def _in_history(db: Conn, job: int) -> bool:
    return bool(scalar(db, "SELECT count(*) FROM pgjobs.job_history WHERE id = %s", (job,)))


def _kinds(db: Conn, job: int) -> list[tuple[int, str]]:
    return [(e["attempt"], e["kind"]) for e in errors_of(db, [job])[job]]


def _stop(*procs: Proc) -> None:
    for proc in procs:
        proc.signal(signal.SIGTERM)
    for proc in procs:
        assert proc.wait(60) == 0, proc.output()[-3000:]


@pytest.mark.timeout(120)
def test_async_handler_hanging_forever_is_cancelled_at_its_timeout_then_dead(
    procs: Procs, db: Conn, chaos_dir: Path
) -> None:
    [hang] = enqueue_jobs(db, [(chaosapp.HANG_ASYNC, {})])
    others = _ordinary(db, 100)
    worker = procs.worker("--concurrency", "4")

    wait_for("the hanging job to end", lambda: _in_history(db, hang), 60)
    wait_for("the other jobs", lambda: jobs_left(db) == 0, 60)
    _stop(worker)

    assert _kinds(db, hang) == [(1, "timeout"), (2, "timeout")]
    assert "cancelled" in errors_of(db, [hang])[hang][-1]["error"]
    runs = read_runs(chaos_dir)
    assert [
        (s.attempt, m.kind) for s, m in zip(runs.starts[hang], runs.marks[hang], strict=True)
    ] == [
        (1, "C"),
        (2, "C"),
    ]
    figures = check(db, [hang, *others], runs, dead_allowed={hang})
    assert figures.dead == 1
    record("async handler hangs", figures)


@pytest.mark.timeout(180)
def test_sync_handler_hanging_forever_keeps_its_slot_then_is_rescued_until_dead(
    procs: Procs, db: Conn, chaos_dir: Path
) -> None:
    """Python cannot stop a thread: the worker keeps the slot (the job is never handed to
    another worker while it runs), serves other jobs with its other slots, and on SIGTERM
    exits after the grace period; the job is rescued by the next worker, hangs there too,
    and once its attempts are used up it goes dead without running again."""
    [hang] = enqueue_jobs(db, [(chaosapp.HANG_SYNC, {})])
    first = procs.worker("--concurrency", "2", "--shutdown-grace", "1", name="first")
    wait_for("the hanging job to start", lambda: bool(read_runs(chaos_dir).starts.get(hang)), 30)
    first_id = next(iter(worker_ids(db)[first.pid]))

    others = _ordinary(db, 30)  # the one free slot serves them
    wait_for("the other jobs", lambda: jobs_left(db) == 1, 60)
    wait_for("the timeout warning", lambda: "overran its 1s timeout" in first.output(), 30)
    row = db.execute("SELECT state::text, worker_id, attempt FROM pgjobs.jobs").fetchall()
    assert row == [("running", first_id, 1)], "the overrunning job must stay with its worker"

    _stop(first)  # exit 0 after the 1 s grace, leaving the thread and the job behind
    assert "still running after the grace period" in first.output()
    assert db.execute("SELECT state::text FROM pgjobs.jobs").fetchall() == [("running",)]

    second = procs.worker("--concurrency", "2", "--shutdown-grace", "1", name="second")

    def second_attempt() -> bool:
        return len(read_runs(chaos_dir).starts.get(hang, [])) == 2

    wait_for("the rescued job to hang on the second worker", second_attempt, 30)
    second_id = next(iter(worker_ids(db)[second.pid]))
    _stop(second)

    third = procs.worker(name="third")  # rescues after the grace, finds the attempts used up
    wait_for("the job to go dead", lambda: jobs_left(db) == 0, 60)
    _stop(third)
    assert _kinds(db, hang) == [(1, "worker_lost"), (2, "worker_lost"), (3, "exhausted")]
    runs = read_runs(chaos_dir)
    assert [s.attempt for s in runs.starts[hang]] == [1, 2]
    assert not runs.marks.get(hang), "the hanging handler returned"
    figures = check(
        db, [hang, *others], runs, lost_workers={first_id, second_id}, dead_allowed={hang}
    )
    assert figures.dead == 1
    record("sync handler hangs", figures, sigterms=2)


def _children(supervisor: Proc) -> list[int]:
    return descendants(supervisor.pid)


def _two_children(db: Conn, supervisor: Proc) -> bool:
    """Exactly the supervisor's two live children are registered (no stale rows left)."""
    registered = worker_ids(db)
    return len(registered) == 2 and set(registered) <= set(_children(supervisor))


@pytest.mark.timeout(180)
def test_handler_leaking_memory_is_oom_killed_restarted_and_ends_dead(
    procs: Procs, db: Conn, chaos_dir: Path
) -> None:
    """A handler that leaks until the process is killed (the test plays the OOM killer,
    SIGKILL at 400 MB RSS): the supervisor restarts the process, the job is rescued, and
    after max_attempts kills it is dead instead of killing workers forever."""
    [leak] = enqueue_jobs(db, [(chaosapp.LEAK, {})])
    others = _ordinary(db, 300)
    supervisor = procs.worker("--processes", "2", "--concurrency", "2", name="supervisor")

    kills = 0
    lost: set[int] = set()
    deadline = time.monotonic() + 150
    while not (_in_history(db, leak) and jobs_left(db) == 0):
        assert time.monotonic() < deadline, "the leak scenario did not end"
        assert supervisor.running(), supervisor.output()[-3000:]
        for pid in _children(supervisor):
            if rss_bytes(pid) > OOM_BOUND:
                lost |= worker_ids(db).get(pid, set())
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                kills += 1
        time.sleep(0.05)

    assert kills == chaosapp.POISON_MAX_ATTEMPTS, f"{kills} OOM kills"
    assert supervisor.output().count("restarting") >= kills
    wait_for("two live children registered", lambda: _two_children(db, supervisor), 60)
    _stop(supervisor)
    assert _kinds(db, leak) == [(1, "worker_lost"), (2, "worker_lost"), (3, "exhausted")]
    figures = check(
        db, [leak, *others], read_runs(chaos_dir), lost_workers=lost, dead_allowed={leak}
    )
    record("memory leak, OOM-killed", figures, kills=kills, restarts=kills)


@pytest.mark.timeout(180)
def test_handler_calling_os_exit_is_restarted_and_ends_dead_after_max_attempts(
    procs: Procs, db: Conn, chaos_dir: Path
) -> None:
    [crash] = enqueue_jobs(db, [(chaosapp.EXIT, {})])
    others = _ordinary(db, 300)
    supervisor = procs.worker("--processes", "2", "--concurrency", "2", name="supervisor")

    deadline = time.monotonic() + 150
    while not (_in_history(db, crash) and jobs_left(db) == 0):
        assert time.monotonic() < deadline, "the os._exit scenario did not end"
        assert supervisor.running(), supervisor.output()[-3000:]
        time.sleep(0.05)

    exits = chaosapp.EXIT_MAX_ATTEMPTS
    assert supervisor.output().count("exited with 1; restarting") == exits
    wait_for("two live children registered", lambda: _two_children(db, supervisor), 60)
    live = {wid for ids in worker_ids(db).values() for wid in ids}
    _stop(supervisor)
    kinds = _kinds(db, crash)
    assert kinds == [*((n, "worker_lost") for n in range(1, exits + 1)), (exits + 1, "exhausted")]
    runs = read_runs(chaos_dir)
    assert [s.attempt for s in runs.starts[crash]] == list(range(1, exits + 1))
    # Every worker that ran something and is not one of the two live children is gone.
    lost = {s.worker for starts in runs.starts.values() for s in starts} - live
    figures = check(db, [crash, *others], runs, lost_workers=lost, dead_allowed={crash})
    record("os._exit in a handler", figures, process_exits=exits, restarts=exits)
