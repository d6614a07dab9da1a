"""The monitoring views of migration 0003, on hand-made rows, and the plans that keep them cheap.

Rows are written straight into the tables with timestamps relative to the database's now(),
so every expected number is exact.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
import pytest

import pgjobs

Conn = psycopg.Connection[Any]


def finished(
    db: Conn,
    job_id: int,
    *,
    task: str = "emails.send",
    queue: str = "email",
    state: str = "succeeded",
    ago: str = "1 minute",
    took: float = 1.0,
    attempt: int = 1,
    errors: str = "[]",
    started: bool = True,
) -> None:
    """A finished job that ended `ago` before now() after running `took` seconds."""
    db.execute(
        "INSERT INTO pgjobs.job_history (id, task, queue, args, kwargs, priority, state,"
        " attempt, max_attempts, run_at, enqueued_at, started_at, finished_at, worker_id,"
        " dedup_key, errors)"
        " SELECT %(id)s, %(task)s, %(queue)s, '[]', '{}', 0, %(state)s, %(attempt)s, 5,"
        "  f - interval '1 hour', f - interval '1 hour',"
        "  CASE WHEN %(started)s THEN f - make_interval(secs => %(took)s) END, f, 1, NULL,"
        "  %(errors)s::jsonb"
        " FROM (SELECT now() - %(ago)s::interval AS f) t",
        {
            "id": job_id,
            "task": task,
            "queue": queue,
            "state": state,
            "attempt": attempt,
            "took": took,
            "ago": ago,
            "errors": errors,
            "started": started,
        },
    )


def unfinished(
    db: Conn,
    *,
    queue: str = "email",
    state: str = "queued",
    run_at: str = "now() - interval '10 seconds'",
    worker_id: int | None = None,
    task: str = "emails.send",
) -> int:
    """A queued or running job; `run_at` is an SQL expression (a test constant)."""
    row = db.execute(
        "INSERT INTO pgjobs.jobs (task, queue, state, run_at, started_at, worker_id, attempt)"
        f" VALUES (%s, %s, %s, {run_at},"
        "  CASE WHEN %s = 'running' THEN now() - interval '90 seconds' END, %s,"
        "  CASE WHEN %s = 'running' THEN 1 ELSE 0 END) RETURNING id",
        (task, queue, state, state, worker_id, state),
    ).fetchone()
    assert row is not None
    return int(row[0])


def worker(db: Conn, worker_id: int, heartbeat_ago: str = "2 seconds") -> None:
    db.execute(
        "INSERT INTO pgjobs.workers (id, host, pid, queues, concurrency, heartbeat_at, protocol)"
        " VALUES (%s, 'box-1', 4242, NULL, 10, now() - %s::interval, 2)",
        (worker_id, heartbeat_ago),
    )


def one(db: Conn, query: str, *params: Any) -> dict[str, Any]:
    rows = many(db, query, *params)
    assert len(rows) == 1, rows
    return rows[0]


def many(db: Conn, query: str, *params: Any) -> list[dict[str, Any]]:
    cur = db.execute(query, params)
    assert cur.description is not None
    names = [column.name for column in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


# ------------------------------------------------------------------------- queue_stats
def test_queue_stats_counts_states_ages_and_the_last_hour(db: Conn) -> None:
    for _ in range(3):
        unfinished(db, queue="email")
    unfinished(db, queue="email", run_at="now() - interval '5 minutes'")  # the oldest
    unfinished(db, queue="email", run_at="now() + interval '1 hour'")  # scheduled
    unfinished(db, queue="email", state="running", worker_id=1)
    unfinished(db, queue="idle", run_at="now() + interval '1 day'")
    finished(db, 1001, queue="email", ago="10 minutes")
    finished(db, 1002, queue="email", state="dead", ago="20 minutes")
    finished(db, 1003, queue="email", state="cancelled", ago="30 minutes", started=False)
    finished(db, 1004, queue="email", ago="2 hours")  # outside the hour
    db.execute("UPDATE pgjobs.queues SET paused = true WHERE name = 'idle'")

    email = one(db, "SELECT * FROM pgjobs.queue_stats WHERE queue = 'email'")
    assert email["paused"] is False
    assert (email["queued"], email["scheduled"], email["running"]) == (4, 1, 1)
    assert timedelta(minutes=5) <= email["oldest_queued_age"] < timedelta(minutes=6)
    assert (email["succeeded_1h"], email["dead_1h"], email["cancelled_1h"]) == (1, 1, 1)

    idle = one(db, "SELECT * FROM pgjobs.queue_stats WHERE queue = 'idle'")
    assert idle["paused"] is True
    assert (idle["queued"], idle["scheduled"], idle["running"]) == (0, 1, 0)
    assert idle["oldest_queued_age"] is None  # nothing eligible
    assert (idle["succeeded_1h"], idle["dead_1h"]) == (0, 0)


def test_queue_stats_lists_known_queues_without_jobs(db: Conn) -> None:
    db.execute("INSERT INTO pgjobs.queues (name) VALUES ('empty')")
    row = one(db, "SELECT * FROM pgjobs.queue_stats")
    assert row["queue"] == "empty"
    assert (row["queued"], row["scheduled"], row["running"], row["dead_1h"]) == (0, 0, 0, 0)


# ------------------------------------------------------------------------- task_stats
def test_task_stats_over_a_span(db: Conn) -> None:
    finished(db, 1, ago="1 minute", took=1.0)
    finished(db, 2, ago="2 minutes", took=2.0, attempt=2)
    finished(db, 3, ago="3 minutes", took=3.0)
    finished(db, 4, state="dead", ago="4 minutes", took=4.0, attempt=5)
    finished(db, 5, state="cancelled", ago="1 minute", started=False)
    finished(db, 6, ago="2 hours", took=100.0)  # outside the span
    finished(db, 7, task="reports.build", ago="30 seconds", took=10.0)

    rows = many(db, "SELECT * FROM pgjobs.task_stats(interval '10 minutes') ORDER BY task")
    assert [row["task"] for row in rows] == ["emails.send", "reports.build"]
    email = rows[0]
    assert (email["finished"], email["succeeded"], email["dead"], email["cancelled"]) == (
        5,
        3,
        1,
        1,
    )
    assert email["per_second"] == pytest.approx(5 / 600)
    assert email["failure_rate"] == pytest.approx(1 / 4)
    assert email["retries"] == 1 + 4  # one extra attempt, then four before the dead one
    assert email["p50_seconds"] == pytest.approx(2.5)  # 1, 2, 3, 4 (cancelled: not run)
    assert email["p99_seconds"] == pytest.approx(3.97)
    assert email["max_seconds"] == pytest.approx(4.0)
    reports = rows[1]
    assert (reports["finished"], reports["failure_rate"]) == (1, 0.0)
    assert reports["p95_seconds"] == pytest.approx(10.0)


def test_task_stats_of_cancelled_jobs_only_has_no_rates_or_durations(db: Conn) -> None:
    finished(db, 1, state="cancelled", started=False)
    row = one(db, "SELECT * FROM pgjobs.task_stats(interval '1 hour')")
    assert row["failure_rate"] is None
    assert row["p50_seconds"] is None
    assert row["max_seconds"] is None
    assert row["retries"] == 0


def test_task_window_stats_has_the_three_periods(db: Conn) -> None:
    finished(db, 1, ago="1 minute")
    finished(db, 2, ago="30 minutes")
    finished(db, 3, ago="5 hours")
    finished(db, 4, ago="3 days")
    rows = many(db, "SELECT period, finished FROM pgjobs.task_window_stats")
    assert sorted(rows, key=lambda r: r["finished"]) == [
        {"period": "5m", "finished": 1},
        {"period": "1h", "finished": 2},
        {"period": "24h", "finished": 3},
    ]


# ------------------------------------------------------------------ running, workers, dead
def test_running_jobs_name_their_worker_and_runtime(db: Conn) -> None:
    worker(db, 17)
    mine = unfinished(db, state="running", worker_id=17)
    orphan = unfinished(db, state="running", worker_id=99)  # its worker is gone
    unfinished(db)  # queued: not running

    rows = {r["id"]: r for r in many(db, "SELECT * FROM pgjobs.running_jobs")}
    assert set(rows) == {mine, orphan}
    assert (rows[mine]["worker_id"], rows[mine]["host"], rows[mine]["pid"]) == (17, "box-1", 4242)
    assert timedelta(seconds=90) <= rows[mine]["runtime"] < timedelta(seconds=120)
    assert (rows[orphan]["host"], rows[orphan]["pid"]) == (None, None)


def test_worker_status_shows_heartbeat_age_and_running_jobs(db: Conn) -> None:
    worker(db, 1, heartbeat_ago="3 seconds")
    worker(db, 2, heartbeat_ago="2 minutes")
    unfinished(db, state="running", worker_id=1)
    unfinished(db, state="running", worker_id=1)

    rows = many(db, "SELECT * FROM pgjobs.worker_status ORDER BY id")
    assert [(r["id"], r["running"], r["concurrency"]) for r in rows] == [(1, 2, 10), (2, 0, 10)]
    assert timedelta(seconds=3) <= rows[0]["heartbeat_age"] < timedelta(seconds=30)
    assert rows[1]["heartbeat_age"] >= timedelta(minutes=2)


def test_dead_jobs_show_the_last_error(db: Conn) -> None:
    errors = (
        '[{"attempt": 1, "kind": "exception", "error": "ValueError: first"},'
        ' {"attempt": 2, "kind": "timeout", "error": "timed out after 5s"}]'
    )
    finished(db, 1, state="dead", errors=errors, attempt=2)
    finished(db, 2)  # succeeded: not dead
    row = one(db, "SELECT * FROM pgjobs.dead_jobs")
    assert row["id"] == 1
    assert (row["last_error_kind"], row["last_error"]) == ("timeout", "timed out after 5s")
    assert (row["attempt"], row["max_attempts"]) == (2, 5)


def test_the_views_work_with_any_search_path(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET search_path TO pg_catalog")
        for view in ("queue_stats", "task_window_stats", "running_jobs", "worker_status"):
            conn.execute(f"SELECT * FROM pgjobs.{view}").fetchall()
        conn.execute("SELECT * FROM pgjobs.task_stats('1 hour')").fetchall()


def test_a_custom_schema_has_its_own_views(dsn: str, db: Conn) -> None:
    app = pgjobs.App(dsn, schema="ops_jobs")
    try:
        app.migrate()
        app.enqueue("t", queue="ops")
        row = one(db, "SELECT queue, queued FROM ops_jobs.queue_stats")
        assert row == {"queue": "ops", "queued": 1}
        assert many(db, "SELECT * FROM pgjobs.queue_stats") == []
    finally:
        app.close()


# ---------------------------------------------------------------------------- plans
def plan(db: Conn, query: str, *params: Any) -> str:
    """The plan text, with sequential scans discouraged so that usable indexes show."""
    with db.transaction():
        db.execute("SET LOCAL enable_seqscan = off")
        rows = db.execute(f"EXPLAIN (COSTS OFF) {query}", params).fetchall()
    return "\n".join(row[0] for row in rows)


def test_task_stats_reads_only_its_window_through_the_brin_index(db: Conn) -> None:
    text = plan(db, "SELECT * FROM pgjobs.task_stats(interval '5 minutes')")
    # Inlined: the bound is a constant of the index condition, not a function call.
    assert "job_history_finished_brin" in text
    assert "'00:05:00'::interval" in text
    assert "Function Scan" not in text


def test_filtering_task_window_stats_by_period_skips_the_other_periods(db: Conn) -> None:
    text = plan(db, "SELECT * FROM pgjobs.task_window_stats WHERE period = '5m'")
    assert "'00:05:00'::interval" in text
    assert "'01:00:00'::interval" not in text
    assert "'24:00:00'::interval" not in text


def test_queue_depth_of_the_metrics_never_reads_history(app: pgjobs.App, db: Conn) -> None:
    query = app.database.queries["metrics_queue_depth"].decode()
    assert "job_history" not in plan(db, query)
    assert "job_history" in plan(db, "SELECT * FROM pgjobs.queue_stats")


def test_dead_jobs_and_the_retry_walk_use_their_partial_indexes(app: pgjobs.App, db: Conn) -> None:
    text = plan(db, "SELECT * FROM pgjobs.dead_jobs ORDER BY finished_at DESC LIMIT 20")
    assert "job_history_dead_idx" in text
    query = app.database.queries["admin_dead_job_ids"].decode()
    params = {"after": 0, "queue": None, "limit": 500}
    with db.transaction():
        db.execute("SET LOCAL enable_seqscan = off")
        rows = db.execute(b"EXPLAIN (COSTS OFF) " + query.encode(), params).fetchall()
    assert "job_history_dead_id_idx" in "\n".join(row[0] for row in rows)


def test_listing_dead_jobs_walks_the_dead_index_newest_first(app: pgjobs.App, db: Conn) -> None:
    query = app.database.queries["admin_list_dead_jobs"]
    params = {"queue": None, "task": None, "limit": 50}
    with db.transaction():
        db.execute("SET LOCAL enable_seqscan = off")
        rows = db.execute(b"EXPLAIN (COSTS OFF) " + query, params).fetchall()
    text = "\n".join(row[0] for row in rows)
    assert "Index Scan Backward using job_history_dead_id_idx" in text
    assert "Sort" not in text


def test_running_jobs_use_the_running_index(db: Conn) -> None:
    assert "jobs_running_idx" in plan(db, "SELECT * FROM pgjobs.running_jobs")
