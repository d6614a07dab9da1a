"""A foreign session holding each lock pgjobs uses; here the producer role (any role can take
any advisory lock), connected as the app would be.

(a) A dead worker's key: right after a kill -9, the spoofer takes the worker's advisory lock.
    Its jobs must still be rescued (the rescuer trusts only the backend the worker registered)
    and `worker_status` must show the session as 'foreign' meanwhile.
(b) The cron leader key: the leader is killed and the spoofer takes its key before any other
    worker can. A new worker must move the election away from it: ticks keep firing.
(c) The migrate key: the spoofer holds the advisory key migrations used before version 5 and
    tries the migrations table lock; `pgjobs migrate` must finish (or fail with one clear
    line) within seconds, not hang.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import chaosapp
import psycopg
import pytest
from harness import (
    PGJOBS,
    Conn,
    Logins,
    Procs,
    check,
    enqueue_jobs,
    freeze,
    jobs_left,
    no_worker_rows,
    read_runs,
    record,
    running_on,
    scalar,
    wait_for,
    worker_ids,
)

from pgjobs import db as pgjobs_db

pytestmark = pytest.mark.chaos


def _grab(conn: Conn, key: int, timeout: float = 10) -> float:
    """Take advisory lock `key` on `conn` as soon as it is free; returns the wall time."""
    wait_for(
        f"lock {key} to be free",
        lambda: bool(scalar(conn, "SELECT pg_try_advisory_lock(%s)", (key,))),
        timeout,
        step=0.005,
    )
    return time.time()


@pytest.mark.timeout(120)
def test_a_foreign_holder_of_a_dead_workers_lock_does_not_keep_its_jobs(
    procs: Procs, db: Conn, dsn: str, chaos_dir: Path, logins: Logins
) -> None:
    ids = enqueue_jobs(db, [(chaosapp.WORK, {"ms": 10, "first_attempt_ms": 60_000})] * 4)
    victim = procs.worker("--concurrency", "4", "--rescue-grace", "3", name="victim")
    wait_for("the victim's jobs", lambda: all(read_runs(chaos_dir).starts.get(j) for j in ids), 30)
    other = procs.worker("--concurrency", "4", "--rescue-grace", "3", name="other")
    wait_for("the other worker", lambda: len(worker_ids(db)) == 2, 60)
    [victim_id] = worker_ids(db)[victim.pid]
    assert freeze(db, victim)
    held = running_on(db, {victim_id})
    assert held == set(ids)
    key = (pgjobs_db.lock_namespace("pgjobs", "worker") << 32) | victim_id
    with psycopg.connect(logins.dsn(dsn, logins.producer), autocommit=True) as spoofer:
        victim.signal(signal.SIGKILL)
        killed = time.monotonic()
        grabbed = _grab(spoofer, key)
        query = "SELECT session FROM pgjobs.worker_status WHERE id = %s"
        seen = scalar(db, query, (victim_id,))
        took = wait_for("the rescue", lambda: not running_on(db, {victim_id}), 30)
        rescued_after = time.monotonic() - killed
        assert scalar(spoofer, "SELECT pg_advisory_unlock(%s)", (key,))
    assert seen == "foreign"
    wait_for("the rescued jobs to finish", lambda: jobs_left(db) == 0, 60)
    other.signal(signal.SIGTERM)
    assert other.wait(60) == 0, other.output()[-3000:]
    no_worker_rows(db)
    runs = read_runs(chaos_dir)
    assert all(runs.starts[job][-1].at > grabbed for job in ids)  # rescued while spoofed
    figures = check(db, ids, runs, lost_workers={victim_id}, rerun_allowed=held)
    assert figures.reruns == len(ids)
    record(
        "foreign holder of a dead worker's lock",
        figures,
        worker_status_session=seen,
        rescued_after_kill_s=round(rescued_after, 2),
        waited_after_spoof_s=round(took, 2),
    )


def _leader(db: Conn) -> tuple[str | None, Any]:
    row = db.execute("SELECT status, holder_application FROM pgjobs.cron_leader").fetchone()
    return (None, None) if row is None else (row[0], row[1])


def _ticks_since(db: Conn, since: Any) -> int:
    query = "SELECT count(*) FROM pgjobs.cron_runs WHERE schedule = %s AND enqueued_at > %s"
    return int(scalar(db, query, (chaosapp.TICK_SCHEDULE, since)))


@pytest.mark.timeout(120)
def test_a_foreign_holder_of_the_cron_leader_key_does_not_stop_the_ticks(
    procs: Procs, db: Conn, dsn: str, chaos_dir: Path, logins: Logins
) -> None:
    cron = {"PGJOBS_CHAOS_CRON": "1"}  # chaosapp then declares an every-second schedule
    first = procs.worker("--concurrency", "4", name="leader", env=cron)
    wait_for("a cron leader", lambda: _leader(db) == ("leader", first.appname), 60)
    start = scalar(db, "SELECT now()")
    wait_for("two ticks", lambda: _ticks_since(db, start) >= 2, 30)
    key = int(scalar(db, "SELECT lock_key FROM pgjobs.cron_election"))
    lost = worker_ids(db)[first.pid]
    with psycopg.connect(logins.dsn(dsn, logins.producer), autocommit=True) as spoofer:
        first.signal(signal.SIGKILL)
        assert first.wait(10) == -signal.SIGKILL
        _grab(spoofer, key)
        spoofed = scalar(db, "SELECT now()")
        successor = procs.worker("--concurrency", "4", name="successor", env=cron)
        took = wait_for("three ticks after the spoof", lambda: _ticks_since(db, spoofed) >= 3, 60)
        assert _leader(db) == ("leader", successor.appname)
        assert scalar(db, "SELECT lock_key FROM pgjobs.cron_election") != key
        assert scalar(spoofer, "SELECT pg_advisory_unlock(%s)", (key,))  # still held: moved
    assert "the election moved to a new key" in successor.output()
    successor.signal(signal.SIGTERM)
    assert successor.wait(60) == 0, successor.output()[-3000:]
    drain = procs.worker("--burst", name="drain", env=cron)  # runs the ticks left queued
    assert drain.wait(60) == 0, drain.output()[-3000:]
    ids = [row[0] for row in db.execute("SELECT job_id FROM pgjobs.cron_runs").fetchall()]
    figures = check(db, ids, read_runs(chaos_dir), lost_workers=lost)
    record(
        "foreign holder of the cron leader key", figures, three_ticks_after_spoof_s=round(took, 1)
    )


@pytest.mark.timeout(60)
def test_a_foreign_holder_of_the_migrate_key_does_not_hang_migrate(
    procs: Procs, db: Conn, dsn: str, logins: Logins
) -> None:
    old_key = pgjobs_db.lock_namespace("pgjobs", "migrate")  # pg_advisory_xact_lock before v5
    with psycopg.connect(logins.dsn(dsn, logins.producer), autocommit=True) as spoofer:
        assert scalar(spoofer, "SELECT pg_try_advisory_lock(%s)", (old_key,))
        with pytest.raises(psycopg.errors.InsufficientPrivilege), spoofer.transaction():
            spoofer.execute("LOCK TABLE pgjobs.migrations IN SHARE ROW EXCLUSIVE MODE")
        started = time.monotonic()
        try:
            done = subprocess.run(
                [str(PGJOBS), "migrate", "--dsn", dsn],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except subprocess.TimeoutExpired:
            pytest.fail("pgjobs migrate hung while a foreign session held the migrate key")
        took = time.monotonic() - started
    output = (done.stdout + done.stderr).strip()
    assert done.returncode == 0 or len(output.splitlines()) == 1, output
    assert done.returncode == 0, output  # nothing of a producer's can hold migrations up
    print(f"CHAOS foreign holder of the migrate key: migrate took {took:.2f}s: {output}")
