"""`pgjobs queues ls|pause|resume` through typer's CliRunner, against real Postgres."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
from cli_runner import error_line, pgjobs, pgjobs_json

import pgjobs as pgj

Conn = psycopg.Connection[Any]


def test_ls_shows_each_queue_with_counts(app: pgj.App, dsn: str) -> None:
    assert pgjobs_json("queues", "ls", dsn=dsn) == []
    assert "no queues yet" in pgjobs("queues", "ls", dsn=dsn).stderr
    app.enqueue("q.a", queue="email")
    app.enqueue("q.a", queue="email")
    app.enqueue("q.b", queue="reports", delay=timedelta(hours=1))

    queues = {q["queue"]: q for q in pgjobs_json("queues", "ls", dsn=dsn)}
    assert set(queues) == {"email", "reports"}
    assert (queues["email"]["queued"], queues["email"]["scheduled"]) == (2, 0)
    assert (queues["reports"]["queued"], queues["reports"]["scheduled"]) == (0, 1)
    assert queues["email"]["oldest_queued_age"] >= 0  # seconds, for scripts
    assert queues["reports"]["oldest_queued_age"] is None
    table = pgjobs("queues", "ls", dsn=dsn).stdout
    assert "email" in table
    assert "reports" in table


def test_pause_and_resume_steer_the_workers(app: pgj.App, dsn: str, db: Conn) -> None:
    ran: list[str] = []

    @app.task(name="q.track")
    def track(queue: str) -> None:
        ran.append(queue)

    held = track.options(queue="reports").enqueue("reports")
    track.options(queue="email").enqueue("email")

    assert "queue 'reports' paused" in pgjobs("queues", "pause", "reports", dsn=dsn).stdout
    [reports] = [q for q in pgjobs_json("queues", "ls", dsn=dsn) if q["queue"] == "reports"]
    assert reports["paused"] is True
    assert "paused" in pgjobs("queues", "ls", dsn=dsn).stdout

    app.run_worker(burst=True, install_signal_handlers=False)
    assert ran == ["email"]
    row = db.execute("SELECT state FROM pgjobs.jobs WHERE id = %s", (held,)).fetchone()
    assert row == ("queued",)

    assert "queue 'reports' resumed" in pgjobs("queues", "resume", "reports", dsn=dsn).stdout
    app.run_worker(burst=True, install_signal_handlers=False)
    assert ran == ["email", "reports"]


def test_pausing_an_unknown_queue_is_an_error_unless_created(app: pgj.App, dsn: str) -> None:
    app.enqueue("q.a", queue="email")
    result = pgjobs("queues", "pause", "emial", dsn=dsn, expect=1)
    assert error_line(result).startswith("error: no queue named 'emial' (known: email)")
    pgjobs("queues", "resume", "emial", dsn=dsn, expect=1)

    pgjobs("queues", "pause", "later", "--create", dsn=dsn)
    queues = {q["queue"]: q["paused"] for q in pgjobs_json("queues", "ls", dsn=dsn)}
    assert queues == {"email": False, "later": True}
