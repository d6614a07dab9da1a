"""Poison rows in a busy queue: nothing in a row may stop a worker or the jobs behind it.

Rows that Python cannot decode are written through SQL among 2,000 normal jobs drained by
two worker processes: kwargs nested 5,000 deep, an integer of 5,000 digits (past Python's
4,300-digit limit), a run_at of '-infinity', and kwargs that are not an object. Each goes in
through `pgjobs.enqueue(...)` if that accepts it, else straight into pgjobs.jobs as the
superuser (a row an older version, or a hand-written INSERT, could have left). The normal
jobs all succeed; the undecodable ones fail like a raising handler (kind 'bad_row', one
error record per attempt) and end dead after their attempts; no worker exits or restarts
a crashed service.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import chaosapp
import psycopg
import pytest
from harness import (
    Conn,
    Procs,
    check,
    enqueue_jobs,
    errors_of,
    jobs_left,
    no_worker_rows,
    read_runs,
    record,
    scalar,
    wait_for,
    worker_ids,
)

pytestmark = pytest.mark.chaos

NORMAL = 2000
ATTEMPTS = 2
DEEP = '{"ms": 0, "deep": ' + "[" * 5000 + "]" * 5000 + "}"
HUGE_INT = '{"ms": ' + "9" * 5000 + "}"
UNDECODABLE = {"nested 5000 deep": DEEP, "5000-digit integer": HUGE_INT}


def _enqueue_sql(db: Conn, kwargs: str, run_at: str | None = None) -> tuple[int, str]:
    """One chaos.work job with these kwargs (JSON text); returns (id, how it got in)."""
    try:
        with db.transaction():
            row = db.execute(
                "SELECT pgjobs.enqueue(task => %s, kwargs => %s::jsonb, max_attempts => %s,"
                " run_at => coalesce(%s::timestamptz, now()))",
                (chaosapp.WORK, kwargs, ATTEMPTS, run_at),
            ).fetchone()
        assert row is not None
        return int(row[0]), "pgjobs.enqueue"
    except psycopg.Error as exc:
        refused = exc.diag.message_primary
    row = db.execute(
        "INSERT INTO pgjobs.jobs (task, kwargs, max_attempts, run_at)"
        " VALUES (%s, %s::jsonb, %s, coalesce(%s::timestamptz, now())) RETURNING id",
        (chaosapp.WORK, kwargs, ATTEMPTS, run_at),
    ).fetchone()
    assert row is not None
    return int(row[0]), f"INSERT (enqueue refused: {refused})"


@pytest.mark.timeout(180)
def test_poison_rows_in_a_busy_queue_fail_alone_and_the_queue_keeps_draining(
    procs: Procs, db: Conn, chaos_dir: Path
) -> None:
    tasks = [chaosapp.WORK, chaosapp.WORK_ASYNC]
    ids = enqueue_jobs(db, [(tasks[n % 2], {"ms": n % 5}) for n in range(NORMAL // 2)])
    poison: dict[str, int] = {}
    doors: dict[str, str] = {}
    for name, kwargs in UNDECODABLE.items():
        poison[name], doors[name] = _enqueue_sql(db, kwargs)
    minus_infinity, doors["run_at -infinity"] = _enqueue_sql(db, '{"ms": 0}', "-infinity")
    # kwargs that are not an object cannot even be stored: the table's CHECK refuses them.
    with pytest.raises(psycopg.errors.CheckViolation):
        _enqueue_sql(db, "5")
    ids += enqueue_jobs(db, [(tasks[n % 2], {"ms": n % 5}) for n in range(NORMAL // 2)])
    ids += [*poison.values(), minus_infinity]

    started = time.monotonic()
    workers = [procs.worker("--concurrency", "10", name=f"p{n}") for n in range(2)]
    wait_for("both workers", lambda: len(worker_ids(db)) == 2, 60)
    registered = worker_ids(db)
    deadline = time.monotonic() + 120
    while jobs_left(db):
        assert time.monotonic() < deadline, f"{jobs_left(db)} jobs left after 120 s"
        for proc in workers:
            assert proc.running(), f"{proc.appname} exited:\n{proc.output()[-3000:]}"
        time.sleep(0.1)
    drained = time.monotonic() - started
    assert worker_ids(db) == registered, "a worker re-registered (restarted or lost its session)"
    for proc in workers:
        proc.signal(signal.SIGTERM)
    for proc in workers:
        assert proc.wait(60) == 0, proc.output()[-3000:]
        assert "crashed" not in proc.output(), proc.output()[-3000:]
    no_worker_rows(db)

    runs = read_runs(chaos_dir)
    figures = check(db, ids, runs, dead_allowed=set(poison.values()))
    assert figures.succeeded == NORMAL + 1  # the -infinity row runs (its run_at is clamped)
    assert figures.dead == len(poison)
    errors = errors_of(db, list(poison.values()))
    for name, job in poison.items():
        kinds = [(e["attempt"], e["kind"]) for e in errors[job]]
        assert kinds == [(n, "bad_row") for n in range(1, ATTEMPTS + 1)], (name, errors[job])
        assert job not in runs.starts, f"{name}: a handler ran with arguments it cannot have"
    assert (
        scalar(db, "SELECT attempt FROM pgjobs.job_history WHERE id = %s", (minus_infinity,)) == 1
    )
    extra: dict[str, Any] = {f"door {name}": door for name, door in doors.items()}
    record("poison rows in a busy queue", figures, drain_s=round(drained, 1), **extra)
