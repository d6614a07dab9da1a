"""`pgjobs cron ...` through typer's CliRunner against real Postgres, errors included."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner, Result

import pgjobs
from pgjobs import db as pgdb
from pgjobs.cli import app as cli
from pgjobs.cron.scheduler import Scheduler

Conn = psycopg.Connection[Any]


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner(env={"COLUMNS": "200", "PGJOBS_DSN": None})


@pytest.fixture
def registered(app: pgjobs.App) -> pgjobs.App:
    """Three schedules registered in the test database, as a starting worker would."""

    @app.cron("0 9 * * MON", name="weekly-digest", timezone="Europe/Paris")
    def digest() -> None: ...

    @app.every(timedelta(seconds=30), name="sweep")
    def sweep() -> None: ...

    @app.cron("*/5 * * * *", name="five")
    def five() -> None: ...

    async def register() -> None:
        scheduler = Scheduler(app, lambda: pgdb.connect_async(app.database.dsn), app.clock)
        try:
            await scheduler.run_once(app.clock.now())
        finally:
            await scheduler.close()

    asyncio.run(register())
    return app


def invoke(runner: CliRunner, dsn: str, *args: str) -> Result:
    return runner.invoke(cli, ["cron", *args, "--dsn", dsn])


def assert_fails(result: Result, message: str) -> None:
    """Exit 1 with one error line on stderr naming the problem, and no traceback."""
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert message in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert result.stdout == ""


@pytest.mark.usefixtures("registered")
def test_ls_shows_each_schedule_in_words(runner: CliRunner, dsn: str) -> None:
    result = invoke(runner, dsn, "ls")
    assert result.exit_code == 0, result.output
    text = result.stdout
    for expected in (
        "weekly-digest",
        "every Monday at 09:00 (Europe/Paris)",
        "sweep",
        "every 30 seconds",
        "every 5 minutes",
        "enabled",
        "never",
    ):
        assert expected in text, text


def test_ls_says_who_leads_or_that_a_foreign_session_holds_the_key(
    registered: pgjobs.App, runner: CliRunner, dsn: str, db: psycopg.Connection[Any]
) -> None:
    app = registered
    result = invoke(runner, dsn, "ls")
    assert "no cron leader" in result.stdout, result.stdout

    async def lead_and_check() -> None:
        scheduler = Scheduler(app, lambda: pgdb.connect_async(app.database.dsn), app.clock)
        try:
            await scheduler.run_once(app.clock.now())
            assert scheduler.leader
            shown = await asyncio.to_thread(invoke, runner, dsn, "ls")
            assert f"cron leader: {scheduler.identity}" in shown.stdout, shown.stdout
        finally:
            await scheduler.close()

    asyncio.run(lead_and_check())
    # The key the leader used, now held by a session no worker elected (this test's).
    key = db.execute("SELECT lock_key FROM pgjobs.cron_election").fetchone()
    assert key is not None
    assert db.execute("SELECT pg_try_advisory_lock(%s)", key).fetchone() == (True,)
    try:
        text = " ".join(invoke(runner, dsn, "ls").stdout.split())
        assert "held by a session no worker elected" in text, text
        assert f"backend pid {db.info.backend_pid}" in text, text
    finally:
        db.execute("SELECT pg_advisory_unlock(%s)", key)


@pytest.mark.usefixtures("registered")
def test_ls_json(runner: CliRunner, dsn: str) -> None:
    result = invoke(runner, dsn, "ls", "--json")
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    assert [s["name"] for s in listed] == ["five", "sweep", "weekly-digest"]
    digest = listed[2]
    assert digest["description"] == "every Monday at 09:00 (Europe/Paris)"
    assert (digest["status"], digest["expression"], digest["timezone"]) == (
        "enabled",
        "0 9 * * MON",
        "Europe/Paris",
    )
    assert digest["next_run"].endswith("+00:00")
    assert (digest["last_run"], digest["success_rate"], digest["overridden"]) == (
        None,
        None,
        False,
    )


def test_ls_without_schedules(runner: CliRunner, dsn: str) -> None:
    result = invoke(runner, dsn, "ls")
    assert result.exit_code == 0, result.output
    assert "no schedules" in result.stdout
    assert json.loads(invoke(runner, dsn, "ls", "--json").stdout) == []


@pytest.mark.usefixtures("registered")
def test_disable_enable(runner: CliRunner, dsn: str, db: Conn) -> None:
    result = invoke(runner, dsn, "disable", "sweep")
    assert result.exit_code == 0, result.output
    assert "schedule 'sweep' disabled: disabled, every 30 seconds; next run -" in result.stdout
    row = db.execute("SELECT enabled, updated_by FROM pgjobs.schedules WHERE name = 'sweep'")
    enabled, updated_by = row.fetchone()  # type: ignore[misc]
    assert enabled is False
    assert "@" in updated_by
    listed = json.loads(invoke(runner, dsn, "ls", "--json").stdout)
    assert {s["name"]: s["status"] for s in listed}["sweep"] == "disabled"

    result = invoke(runner, dsn, "enable", "sweep")
    assert result.exit_code == 0, result.output
    assert "schedule 'sweep' enabled: enabled" in result.stdout
    assert db.execute("SELECT enabled FROM pgjobs.schedules WHERE name = 'sweep'").fetchone() == (
        True,
    )


@pytest.mark.usefixtures("registered")
def test_set_and_reset(runner: CliRunner, dsn: str, db: Conn) -> None:
    result = invoke(runner, dsn, "set", "five", "0 7 * * 1-5", "--timezone", "Asia/Tokyo")
    assert result.exit_code == 0, result.output
    assert "re-timed: enabled, Monday to Friday at 07:00 (Asia/Tokyo); next run" in result.stdout
    assert "JST" in result.stdout
    listed = {s["name"]: s for s in json.loads(invoke(runner, dsn, "ls", "--json").stdout)}
    assert (listed["five"]["overridden"], listed["five"]["code_expression"]) == (
        True,
        "*/5 * * * *",
    )
    assert "operator's; code: */5 * * * * (UTC)" in invoke(runner, dsn, "ls").stdout

    result = invoke(runner, dsn, "set", "five", "@hourly")  # keeps the timezone in effect
    assert result.exit_code == 0, result.output
    row = db.execute("SELECT expression, timezone FROM pgjobs.schedules WHERE name = 'five'")
    assert row.fetchone() == ("@hourly", "Asia/Tokyo")

    result = invoke(runner, dsn, "reset", "five")
    assert result.exit_code == 0, result.output
    assert "reset to the code's timing: enabled, every 5 minutes" in result.stdout
    row = db.execute("SELECT expression, timezone FROM pgjobs.schedules WHERE name = 'five'")
    assert row.fetchone() == ("*/5 * * * *", "UTC")


@pytest.mark.usefixtures("registered")
def test_trigger_refusal_and_force(runner: CliRunner, dsn: str, db: Conn) -> None:
    result = invoke(runner, dsn, "trigger", "weekly-digest")
    assert result.exit_code == 0, result.output
    first = int(result.stdout.split()[2])
    assert result.stdout.strip() == f"enqueued job {first} for schedule 'weekly-digest'"

    refused = invoke(runner, dsn, "trigger", "weekly-digest")
    assert_fails(
        refused,
        f"schedule 'weekly-digest' already has a run queued (job {first}); "
        "use --force to enqueue another anyway",
    )

    forced = invoke(runner, dsn, "trigger", "weekly-digest", "--force")
    assert forced.exit_code == 0, forced.output
    triggers = db.execute("SELECT trigger FROM pgjobs.cron_runs ORDER BY job_id").fetchall()
    assert triggers == [("operator",), ("operator",)]


@pytest.mark.usefixtures("registered")
def test_history(runner: CliRunner, dsn: str) -> None:
    assert "has not run yet" in invoke(runner, dsn, "history", "sweep").stdout
    invoke(runner, dsn, "trigger", "sweep")
    invoke(runner, dsn, "trigger", "sweep", "--force")
    result = invoke(runner, dsn, "history", "sweep")
    assert result.exit_code == 0, result.output
    assert result.stdout.count("operator") == 2
    assert "queued" in result.stdout

    runs = json.loads(invoke(runner, dsn, "history", "sweep", "--json").stdout)
    assert [(r["trigger"], r["state"], r["tick_at"]) for r in runs] == [
        ("operator", "queued", None),
        ("operator", "queued", None),
    ]
    assert runs[0]["job_id"] > runs[1]["job_id"]
    limited = json.loads(invoke(runner, dsn, "history", "sweep", "--limit", "1", "--json").stdout)
    assert [r["job_id"] for r in limited] == [runs[0]["job_id"]]


@pytest.mark.usefixtures("registered")
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("enable", "nope"), "no schedule named 'nope' (see `pgjobs cron ls`)"),
        (("disable", "nope"), "no schedule named 'nope'"),
        (("reset", "nope"), "no schedule named 'nope'"),
        (("trigger", "nope"), "no schedule named 'nope'"),
        (("history", "nope"), "no schedule named 'nope'"),
        (("set", "nope", "@daily"), "no schedule named 'nope'"),
        (
            ("set", "five", "0 25 * * *"),
            "invalid schedule '0 25 * * *': hour field '25': out of range (allowed: 0-23)",
        ),
        (("set", "five", "* * *"), "invalid schedule '* * *': expected 5 fields"),
        (("set", "five", "@daily", "--timezone", "Nowhere/City"), "unknown timezone"),
    ],
)
def test_errors_are_one_line(
    runner: CliRunner, dsn: str, args: tuple[str, ...], message: str
) -> None:
    assert_fails(invoke(runner, dsn, *args), message)


@pytest.mark.parametrize(
    "args", [("ls",), ("history", "x"), ("trigger", "x"), ("enable", "x"), ("ls", "--json")]
)
def test_a_schema_that_was_never_migrated(
    runner: CliRunner, dsn: str, args: tuple[str, ...]
) -> None:
    result = runner.invoke(cli, ["cron", *args, "--dsn", dsn, "--schema", "nothing_here"])
    assert_fails(result, "run `pgjobs migrate`")


def test_an_unreachable_database(runner: CliRunner) -> None:
    result = runner.invoke(
        cli, ["cron", "ls", "--dsn", "host=/nonexistent-socket-dir dbname=x connect_timeout=2"]
    )
    assert_fails(result, "cannot talk to Postgres")


def test_cron_help_lists_every_command(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["cron", "--help"])
    assert result.exit_code == 0
    for command in ("ls", "enable", "disable", "set", "reset", "trigger", "history"):
        assert command in result.stdout
