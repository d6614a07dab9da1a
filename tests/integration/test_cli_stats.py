"""`pgjobs stats [--watch]` through typer's CliRunner, against real Postgres."""

from __future__ import annotations

import json
from typing import Any

import psycopg
from cli_runner import error_line, pgjobs, pgjobs_json

import pgjobs as pgj

Conn = psycopg.Connection[Any]


def _some_history(app: pgj.App) -> None:
    @app.task(name="stats.ok", queue="fast")
    def ok() -> None:
        pass

    @app.task(name="stats.dies", queue="slow", max_attempts=1)
    def dies() -> None:
        raise ValueError("nope")

    ok.enqueue_many([{}] * 3)
    dies.enqueue()
    app.run_worker(burst=True, install_signal_handlers=False)
    app.enqueue("stats.ok", queue="fast")  # one left waiting


def test_stats_shows_queues_tasks_and_workers(app: pgj.App, dsn: str) -> None:
    _some_history(app)
    data = pgjobs_json("stats", dsn=dsn)
    assert data["period"] == 300.0
    queues = {q["queue"]: q for q in data["queues"]}
    assert (queues["fast"]["queued"], queues["fast"]["succeeded_1h"]) == (1, 3)
    assert queues["slow"]["dead_1h"] == 1
    tasks = {t["task"]: t for t in data["tasks"]}
    assert (tasks["stats.ok"]["succeeded"], tasks["stats.ok"]["failure_rate"]) == (3, 0.0)
    assert (tasks["stats.dies"]["dead"], tasks["stats.dies"]["failure_rate"]) == (1, 1.0)
    assert tasks["stats.ok"]["p50_seconds"] is not None
    assert data["workers"] == []
    assert data["running"] == []

    text = pgjobs("stats", "--period", "1h", dsn=dsn).stdout
    assert "tasks over the last 1h00m" in text
    for word in ("fast", "slow", "stats.ok", "stats.dies", "100.0%", "no workers running"):
        assert word in text


def test_stats_on_an_empty_schema(dsn: str) -> None:
    text = pgjobs("stats", dsn=dsn).stdout
    assert "no queues yet" in text
    assert "no finished jobs" in text


def test_watch_refreshes_a_bounded_number_of_times(app: pgj.App, dsn: str) -> None:
    _some_history(app)
    result = pgjobs("stats", "--watch", "--iterations", "3", "--interval", "0", "--json", dsn=dsn)
    snapshots = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(snapshots) == 3
    assert all({q["queue"] for q in s["queues"]} == {"fast", "slow"} for s in snapshots)
    assert snapshots[0]["taken_at"] <= snapshots[2]["taken_at"]

    text = pgjobs("stats", "--watch", "--iterations", "2", "--interval", "0", dsn=dsn).stdout
    assert text.count("queues") == 2  # not a terminal: each refresh printed in turn


def test_bad_period_is_one_clear_error(dsn: str) -> None:
    result = pgjobs("stats", "--period", "soon", dsn=dsn, expect=1)
    assert error_line(result).startswith("error: invalid duration 'soon'")
