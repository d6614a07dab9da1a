"""Connection exhaustion: more workers than connections, then a kill -9 and the limit lifted.

Four workers run as a login role of the worker role (sql/roles.sql) whose CONNECTION LIMIT
(9) is set once they are up; then every backend of theirs is cut, so all four reconnect at
once and compete for 9 slots where they need 4 or 5 each. 2,000 jobs are drained meanwhile.
A worker that cannot write outcomes must stop claiming once it holds `3 x concurrency + 100`
jobs running or waiting for their outcome (sampled from the database: rows `running` under
one worker id), say in its log that
it is short of connections, and back off rather than crash. Mid-way the worker holding the
most is frozen, read and killed with SIGKILL: at most that bound runs again, and its
connections go to the others. Once the limit is lifted, the drain completes.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import chaosapp
import pytest
from harness import (
    Conn,
    Logins,
    Proc,
    Procs,
    check,
    enqueue_jobs,
    finished,
    freeze,
    jobs_left,
    read_runs,
    record,
    running_on,
    wait_for,
    worker_ids,
)
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

pytestmark = pytest.mark.chaos

JOBS = 2000
WORKERS = 4
CONCURRENCY = 10
LIMIT = 9  # connections for 4 workers that want 4 (5 for the cron leader) each
# A worker holds at most 3 x concurrency + 100 jobs running or waiting for their outcome to
# be written (Worker.unacked_limit): its rows `running` in the database.
BOUND = 3 * CONCURRENCY + 100
PHASE = 15.0  # seconds of the drain under the limit before it is lifted


def _set_limit(db: Conn, role: str, limit: int) -> None:
    db.execute(
        sql.SQL("ALTER ROLE {} CONNECTION LIMIT {}").format(
            sql.Identifier(role), sql.Literal(limit)
        )
    )


def _running_per_worker(db: Conn) -> dict[int, int]:
    query = "SELECT worker_id, count(*) FROM pgjobs.jobs WHERE state = 'running' GROUP BY 1"
    return dict(db.execute(query).fetchall())


def _cut_all(db: Conn, role: str) -> int:
    query = (
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE usename = %s"
    )
    row = db.execute(query, (role,)).fetchone()
    assert row is not None
    return int(row[0])


def _kill_busiest(db: Conn, workers: list[Proc]) -> tuple[Proc, set[int], set[int]] | None:
    """Freeze the worker with the most running rows, read them, kill -9 it."""
    per_worker = _running_per_worker(db)
    ids = worker_ids(db)
    candidates = [p for p in workers if p.running() and ids.get(p.pid)]
    if not candidates:
        return None
    victim = max(candidates, key=lambda p: sum(per_worker.get(i, 0) for i in ids[p.pid]))
    if not freeze(db, victim):
        return None
    victim_ids = worker_ids(db).get(victim.pid, set())
    held = running_on(db, victim_ids)
    victim.signal(signal.SIGKILL)
    assert victim.wait(10) == -signal.SIGKILL
    return victim, victim_ids, held


def _over(db: Conn, chaos_dir: Path, peak: int) -> str:
    """What the rows over the bound are: handlers running, or outcomes waiting."""
    runs = read_runs(chaos_dir)
    lines = [f"a worker holds {peak} unfinished jobs (bound {BOUND})"]
    for worker, count in _running_per_worker(db).items():
        rows = db.execute(
            "SELECT id, attempt FROM pgjobs.jobs WHERE state = 'running' AND worker_id = %s",
            (worker,),
        ).fetchall()
        ended = running = unstarted = 0
        for job, attempt in rows:
            starts = [s for s in runs.starts.get(job, []) if s.attempt == attempt]
            if not starts:
                unstarted += 1
            elif [m for m in runs.marks.get(job, []) if m.attempt == attempt]:
                ended += 1
            else:
                running += 1
        lines.append(
            f"worker {worker}: {count} running rows: {running} handlers running, "
            f"{ended} ended (outcome not written), {unstarted} not started"
        )
    return "\n".join(lines)


@pytest.mark.timeout(240)
def test_more_workers_than_connections_no_livelock_and_bounded_unacked_work(
    procs: Procs, db: Conn, dsn: str, chaos_dir: Path, logins: Logins
) -> None:
    worker_login = logins.worker
    limited = make_conninfo(dsn, user=worker_login)
    assert conninfo_to_dict(limited)["user"] == worker_login
    args = ["--concurrency", str(CONCURRENCY), "--rescue-grace", "2"]
    workers = [procs.worker(*args, name=f"x{n}", dsn=limited) for n in range(WORKERS)]
    wait_for("every worker to register", lambda: len(worker_ids(db)) == WORKERS, 60)
    lost = {i for ids in worker_ids(db).values() for i in ids}
    _set_limit(db, worker_login, LIMIT)
    assert _cut_all(db, worker_login) >= WORKERS
    tasks = [chaosapp.WORK, chaosapp.WORK_ASYNC]
    ids = enqueue_jobs(db, [(tasks[n % 2], {"ms": 50 + n % 100}) for n in range(JOBS)])

    started = time.monotonic()
    peak = 0
    samples = 0
    killed: tuple[Proc, set[int], set[int]] | None = None
    lifted_at: float | None = None
    done_under_limit = done_before_kill = 0
    while jobs_left(db):
        elapsed = time.monotonic() - started
        assert elapsed < 180, f"{jobs_left(db)} jobs left after 180 s"
        per_worker = _running_per_worker(db)
        samples += 1
        peak = max(peak, *per_worker.values(), 0)
        assert peak <= BOUND, _over(db, chaos_dir, peak)
        if killed is None and elapsed > PHASE / 2:
            done_before_kill = finished(db)
            killed = _kill_busiest(db, workers)  # its connections free up
            if killed is not None:
                lost |= killed[1]
        if lifted_at is None and elapsed > PHASE:
            done_under_limit = finished(db)
            _set_limit(db, worker_login, -1)  # connections free up
            lifted_at = time.monotonic()
        for proc in workers:
            if killed is None or proc is not killed[0]:
                assert proc.running(), f"{proc.appname} exited:\n{proc.output()[-3000:]}"
        time.sleep(0.05)
    drained = time.monotonic() - started
    assert killed is not None, "the drain ended before a worker could be killed"
    survivors = [p for p in workers if p is not killed[0]]
    for proc in survivors:
        proc.signal(signal.SIGTERM)
    for proc in survivors:
        assert proc.wait(60) == 0, proc.output()[-3000:]

    logs = [proc.output() for proc in workers]
    short = sum(log.count("short of Postgres connections") for log in logs)
    assert short, "no worker said it was short of connections"
    assert not any("crashed" in log for log in logs)
    _, _, held = killed
    assert len(held) <= BOUND
    figures = check(db, ids, read_runs(chaos_dir), lost_workers=lost, rerun_allowed=held)
    record(
        "connection exhaustion",
        figures,
        processes=WORKERS,
        connection_limit=LIMIT,
        peak_unfinished_per_worker=peak,
        bound=BOUND,
        held_by_killed=len(held),
        short_of_connections_lines=short,
        finished_before_the_kill=done_before_kill,
        finished_under_the_limit=done_under_limit if lifted_at else JOBS,
        limit_lifted_after_s=None if lifted_at is None else round(lifted_at - started, 1),
        drain_s=round(drained, 1),
    )
