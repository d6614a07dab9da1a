"""Bad input at every door: a clear error, no crash, and nothing lost or half-written.

The doors: the Python API (Task.enqueue, enqueue_many, enqueue_async, App.enqueue), the SQL
function, the `pgjobs` CLI and the worker. Inputs: oversized arguments, unknown task names,
SQL metacharacters in names and dedup keys, malformed CLI JSON, invalid cron schedules, a
database without the schema or at an older schema version, and a DSN with a wrong password
(against a private server that checks passwords: the shared test server trusts everyone).
Non-JSON values and strings Postgres cannot store are covered in test_enqueue.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from worker_harness import WAIT, running_worker, sync_check, until

import pgjobs
import pgjobs.job
from pgjobs.migrate import latest_version
from pgjobs.queries import migrations, queries_for
from pgjobs.worker import Worker, WorkerConfig

ROOT = Path(__file__).resolve().parents[2]
CHAOS = ROOT / "tests" / "chaos"
PGJOBS = Path(sys.executable).parent / "pgjobs"
if str(CHAOS) not in sys.path:
    sys.path.insert(0, str(CHAOS))

from private_server import binaries, private_server  # noqa: E402

Conn = psycopg.Connection[Any]
MiB = 1024 * 1024
# SQL and format-string metacharacters, quotes of every kind, a backslash, non-ASCII (no
# control characters: names refuse them, see test_enqueue_limits.py).
HOSTILE = "x'); DROP TABLE pgjobs.jobs; -- \" %s %(x)s {schema} $$ \\ ☃"


def _jobs(db: Conn) -> list[tuple[Any, ...]]:
    return db.execute("SELECT id, task, queue, kwargs FROM pgjobs.jobs ORDER BY id").fetchall()


def cli(*args: str, dsn: str | None, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run `pgjobs ARGS` to completion; (exit code, stdout + stderr)."""
    environ = dict(os.environ)
    environ.pop("PGJOBS_DSN", None)
    environ.pop("COLUMNS", None)
    if dsn is not None:
        environ["PGJOBS_DSN"] = dsn
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(CHAOS), environ.get("PYTHONPATH")]))
    environ.update(env or {})
    done = subprocess.run(
        [str(PGJOBS), *args],
        check=False,
        cwd=CHAOS,
        env=environ,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.returncode, done.stdout + done.stderr


def one_line_error(code: int, output: str) -> str:
    assert code == 1, output
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got:\n{output}"
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


# ----------------------------------------------------------------------- payload size
def test_arguments_up_to_the_limit_are_stored_and_run(app: pgjobs.App, db: Conn) -> None:
    got: list[int] = []

    @app.task(name="big.ok")
    def big(blob: str) -> None:
        got.append(len(blob))

    blob = "x" * (pgjobs.job.MAX_ARGUMENTS_BYTES - len('[]{"blob":""}'))
    job_id = big.enqueue(blob=blob)
    app.run_worker(burst=True, install_signal_handlers=False)
    assert got == [len(blob)]
    state = db.execute("SELECT state::text FROM pgjobs.job_history WHERE id = %s", (job_id,))
    assert state.fetchone() == ("succeeded",)


@pytest.mark.parametrize(
    "blob",
    [
        "x" * (10 * MiB),  # the JSON quotes and key push it over
        "€" * (4 * MiB),  # 4 Mi characters, 12 MiB of UTF-8: bytes count, not characters
    ],
    ids=["ascii", "utf8"],
)
def test_arguments_over_the_limit_are_refused_before_any_io_at_every_door(
    app: pgjobs.App, dsn: str, db: Conn, blob: str
) -> None:
    task = app.task(name="big.refused")(lambda blob: None)
    message = (
        r"'big\.refused': the arguments are [\d,]+ bytes of JSON, over the limit of 10,485,760"
    )
    with pytest.raises(ValueError, match=message):
        task.enqueue(blob)
    with pytest.raises(ValueError, match=message):
        task.enqueue_many([{"blob": "small"}, {"blob": blob}])
    with pytest.raises(ValueError, match=message):
        asyncio.run(task.enqueue_async(blob=blob))
    with pytest.raises(ValueError, match=r"'by\.name'.*MAX_ARGUMENTS_BYTES"):
        app.enqueue("by.name", kwargs={"blob": blob})
    with psycopg.connect(dsn) as conn:  # the caller's transaction is not harmed
        conn.execute("CREATE TEMP TABLE orders (id int)")
        conn.execute("INSERT INTO orders VALUES (1)")
        with pytest.raises(ValueError, match=message):
            task.options(conn=conn).enqueue(blob)
        task.options(conn=conn).enqueue("small")
        conn.commit()
        assert conn.execute("SELECT count(*) FROM orders").fetchone() == (1,)
    assert [row[1] for row in _jobs(db)] == ["big.refused"]


def test_the_limit_can_be_changed(
    app: pgjobs.App, db: Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = app.task(name="big.configured")(lambda blob: None)
    monkeypatch.setattr(pgjobs.job, "MAX_ARGUMENTS_BYTES", 1000)
    with pytest.raises(ValueError, match="over the limit of 1,000"):
        task.enqueue("x" * 1000)
    monkeypatch.setattr(pgjobs.job, "MAX_ARGUMENTS_BYTES", 12 * MiB)
    task.enqueue("x" * (11 * MiB))
    assert len(_jobs(db)) == 1


def test_postgres_own_limits_read_as_refusals_not_as_connection_trouble(
    app: pgjobs.App, dsn: str, db: Conn
) -> None:
    # Postgres' program_limit_exceeded is an OperationalError in DB-API terms, which must not
    # be reported as a connection problem. (A dedup key too big for its btree index used to
    # be the example: pgjobs now refuses keys over 512 bytes before any I/O.)
    translated = pgjobs.db.errors_translated(dsn)
    with psycopg.connect(dsn) as conn, pytest.raises(pgjobs.DatabaseError) as info, translated:
        conn.execute("SELECT repeat('x', 1073741824)")
    message = str(info.value)
    assert message.startswith("Postgres refused the operation: requested length"), message
    assert "cannot talk" not in message
    # The SQL door has no pgjobs limit, only Postgres': 256 MiB per jsonb string.
    with pytest.raises(psycopg.errors.ProgramLimitExceeded, match="too long"):
        db.execute("SELECT pgjobs.enqueue('big.sql', jsonb_build_array(repeat('x', 268435456)))")
    assert _jobs(db) == []


# ----------------------------------------------------------------- unknown task names
def test_an_unknown_task_name_is_accepted_and_then_fails_cleanly_in_the_worker(
    app: pgjobs.App, dsn: str, db: Conn
) -> None:
    ran: list[str] = []
    app.task(name="known.task")(lambda: ran.append("known"))
    code, output = cli("enqueue", "no.such.task", dsn=dsn)
    assert code == 0, output
    unknown = int(output.strip())
    dead = app.enqueue("no.such.other", max_attempts=1)
    known = app.enqueue("known.task")

    app.run_worker(burst=True, install_signal_handlers=False)

    assert ran == ["known"]
    # Retried later (a rolling deploy may bring the handler), with the reason recorded.
    state, attempt, errors = db.execute(
        "SELECT state::text, attempt, errors FROM pgjobs.jobs WHERE id = %s", (unknown,)
    ).fetchone()  # type: ignore[misc]
    assert (state, attempt, errors[-1]["kind"]) == ("queued", 1, "unknown_task")
    assert "unknown task 'no.such.task'" in errors[-1]["error"]
    assert "known.task" in errors[-1]["error"]  # it lists what the worker does know
    history = dict(db.execute("SELECT id, state::text FROM pgjobs.job_history").fetchall())
    assert history == {dead: "dead", known: "succeeded"}


# ------------------------------------------------------------- hostile exceptions
class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("this exception cannot be printed")


class CarelessDiscard(pgjobs.Discard):
    """A Discard subclass that forgot to call super().__init__: it has no `reason`."""

    def __init__(self) -> None:
        pass


def test_a_handler_exception_that_cannot_be_printed_fails_the_job_cleanly(
    app: pgjobs.App, db: Conn
) -> None:
    @app.task(name="bad.unprintable", max_attempts=2, retry=pgjobs.Backoff(initial=0, jitter=0))
    def unprintable() -> None:
        raise Unprintable

    job_id = unprintable.enqueue()
    app.run_worker(burst=True, install_signal_handlers=False)
    state, errors = db.execute(
        "SELECT state::text, errors FROM pgjobs.job_history WHERE id = %s", (job_id,)
    ).fetchone()  # type: ignore[misc]
    assert state == "dead"
    assert [(e["attempt"], e["kind"]) for e in errors] == [(1, "exception"), (2, "exception")]
    assert errors[-1]["error"] == "Unprintable: <str() of the exception failed>"


def test_a_failure_outside_the_handler_never_strands_the_job_in_running(
    app: pgjobs.App, db: Conn
) -> None:
    """An exception escaping the executor (here a broken Discard subclass) used to leave the
    job `running` under a live worker, which then kept claiming; it is retried instead."""
    ran: list[str] = []

    @app.task(name="bad.careless")
    def careless() -> None:
        raise CarelessDiscard

    app.task(name="bad.fine")(lambda: ran.append("fine"))
    job_id = careless.enqueue()
    app.enqueue("bad.fine")
    app.run_worker(burst=True, install_signal_handlers=False)

    assert ran == ["fine"]
    state, attempt, errors = db.execute(
        "SELECT state::text, attempt, errors FROM pgjobs.jobs WHERE id = %s", (job_id,)
    ).fetchone()  # type: ignore[misc]
    assert (state, attempt) == ("queued", 1)
    assert errors[-1]["kind"] == "internal_error"
    assert "AttributeError" in errors[-1]["error"]
    assert "reason" in errors[-1]["error"]


# ------------------------------------------------------------------- metacharacters
def test_hostile_names_and_keys_travel_through_cli_sql_and_worker_verbatim(
    app: pgjobs.App, dsn: str, db: Conn
) -> None:
    received: list[Any] = []

    @app.task(name=HOSTILE, queue=HOSTILE)
    def hostile(note: str) -> None:
        received.append((pgjobs.current_job().task, pgjobs.current_job().queue, note))

    args = ["enqueue", HOSTILE, "--queue", HOSTILE, "--dedup-key", HOSTILE]
    first = cli(*args, "--kwargs", json.dumps({"note": HOSTILE}), dsn=dsn)
    assert first[0] == 0, first[1]
    second = cli(*args, "--kwargs", '{"note": "dup"}', dsn=dsn)
    assert second[0] == 0, second[1]
    job_id = int(first[1].strip())
    assert int(second[1].strip()) == job_id, "the dedup key did not hold"
    by_sql = db.execute(
        "SELECT pgjobs.enqueue(task => %s, queue => %s, dedup_key => %s)",
        (HOSTILE, HOSTILE, HOSTILE),
    ).fetchone()
    assert by_sql == (job_id,)
    other = app.enqueue("other.task")  # another queue: must stay untouched

    app.run_worker(queues=[HOSTILE], burst=True, install_signal_handlers=False)

    assert received == [(HOSTILE, HOSTILE, HOSTILE)]
    row = db.execute(
        "SELECT task, queue, dedup_key, state::text FROM pgjobs.job_history WHERE id = %s",
        (job_id,),
    ).fetchone()
    assert row == (HOSTILE, HOSTILE, HOSTILE, "succeeded")
    assert [r[0] for r in _jobs(db)] == [other]  # and the jobs table is still there


@pytest.mark.timeout(60)
def test_a_notify_for_a_hostile_queue_name_wakes_its_worker(app: pgjobs.App) -> None:
    ran: list[str] = []

    async def main() -> None:
        @app.task(name="wake." + HOSTILE, queue=HOSTILE)
        async def wake() -> None:
            ran.append(pgjobs.current_job().queue)

        # Polling every 30 s: within the wait below only the NOTIFY can wake the worker.
        config = WorkerConfig(queues=[HOSTILE], poll_interval=30)
        async with running_worker(app, config):
            await asyncio.sleep(0.5)
            await wake.enqueue_async()
            await until(sync_check(lambda: ran == [HOSTILE]), "the woken job", WAIT)

    asyncio.run(main())


# --------------------------------------------------------------------- CLI JSON
@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("--kwargs", "{bad", "--kwargs is not valid JSON"),
        ("--kwargs", "", "--kwargs is not valid JSON"),
        ("--kwargs", '{"a": 1} trailing', "--kwargs is not valid JSON"),
        ("--kwargs", "[1, 2]", "got list"),
        ("--args", '{"a": 1}', "got dict"),
        ("--args", "nope", "--args is not valid JSON"),
        ("--kwargs", '{"x": NaN}', "argument 'x' is not JSON serializable"),
        ("--kwargs", '{"x": Infinity}', "argument 'x' is not JSON serializable"),
        ("--kwargs", '{"x": "\\u0000"}', "NUL"),
        ("--args", '["\\ud800"]', "surrogate"),
    ],
)
def test_malformed_cli_json_fails_in_one_line_and_writes_nothing(
    dsn: str, db: Conn, option: str, value: str, expected: str
) -> None:
    code, output = cli("enqueue", "some.task", option, value, dsn=dsn)
    line = one_line_error(code, output)
    assert expected in line, line
    assert _jobs(db) == []


# --------------------------------------------------------------------------- cron
@pytest.mark.parametrize(
    "declare",
    [
        lambda app: app.cron("not a cron"),
        lambda app: app.cron("61 * * * *"),
        lambda app: app.cron("* * * * * * *"),
        lambda app: app.cron("0 9 * * MON", timezone="Mars/Olympus_Mons"),
        lambda app: app.cron("'; DROP TABLE pgjobs.schedules; --"),
        lambda app: app.every(timedelta(0)),
        lambda app: app.every(timedelta(seconds=-5)),
    ],
    ids=["words", "minute-61", "seven-fields", "timezone", "sql", "zero", "negative"],
)
def test_invalid_schedules_are_refused_when_declared(declare: Any, app: pgjobs.App) -> None:
    with pytest.raises(pgjobs.PgJobsError):
        declare(app)(lambda: None)
    assert app.schedules == {}
    assert app.tasks == {}


# ------------------------------------------------------- missing or older schema
def _install_version_1(db: Conn) -> None:
    """Replace the schema with what an older pgjobs (schema version 1) left behind."""
    db.execute("DROP SCHEMA pgjobs CASCADE")
    q = queries_for("pgjobs")
    with db.transaction():
        db.execute("CREATE SCHEMA pgjobs")
        db.execute(q["create_migrations_table"])
        db.execute("SET LOCAL search_path TO pgjobs, pg_catalog")
        db.execute(migrations()[0].text.encode())
        db.execute(q["record_migration"], {"version": 1, "name": migrations()[0].name})


@pytest.mark.skipif(latest_version() < 2, reason="needs a schema version after 1")
@pytest.mark.timeout(120)
def test_an_older_schema_stops_workers_clearly_and_migrate_brings_it_up_to_date(
    app: pgjobs.App, dsn: str, db: Conn
) -> None:
    _install_version_1(db)
    latest = latest_version()
    expected = f"schema 'pgjobs' is at version 1, this code needs {latest}: run `pgjobs migrate`"
    with pytest.raises(pgjobs.SchemaError, match=expected.replace("`", ".")):
        asyncio.run(Worker(app).check_schema())
    for processes in ("1", "2"):
        code, output = cli("worker", "chaosapp:app", "--processes", processes, dsn=dsn)
        assert expected in one_line_error(code, output)

    # Producers do not check the version (it would cost a round trip per enqueue): on an
    # older schema whose enqueue() still fits, they keep working, and nothing is lost.
    ran: list[int] = []
    app.task(name="old.schema")(ran.append)
    kept = [app.enqueue("old.schema", [1])]
    code, output = cli("enqueue", "old.schema", "--args", "[2]", dsn=dsn)
    assert code == 0, output
    kept.append(int(output.strip()))

    code, output = cli("migrate", dsn=dsn)
    assert code == 0, output
    assert f"applied migration(s) {', '.join(map(str, range(2, latest + 1)))}" in output
    app.run_worker(burst=True, install_signal_handlers=False)
    assert sorted(ran) == [1, 2]
    states = db.execute(
        "SELECT id, state::text FROM pgjobs.job_history WHERE id = ANY(%s)", (kept,)
    ).fetchall()
    assert sorted(states) == [(job_id, "succeeded") for job_id in sorted(kept)]


@pytest.mark.timeout(120)
def test_a_database_without_the_schema_gets_a_clear_message_at_every_door(
    app: pgjobs.App, dsn: str, db: Conn
) -> None:
    db.execute("DROP SCHEMA pgjobs CASCADE")
    task = app.task(name="no.schema")(lambda: None)
    doors: list[Any] = [
        task.enqueue,
        lambda: task.enqueue_many([{}]),
        lambda: asyncio.run(task.enqueue_async()),
        lambda: app.enqueue("no.schema"),
        lambda: asyncio.run(Worker(app).check_schema()),
    ]
    for door in doors:
        with pytest.raises(pgjobs.SchemaError, match="pgjobs migrate"):
            door()
    for args in (["enqueue", "no.schema"], ["worker", "chaosapp:app", "--burst"]):
        code, output = cli(*args, dsn=dsn)
        assert "pgjobs migrate" in one_line_error(code, output)
    with psycopg.connect(dsn) as conn:
        with pytest.raises(pgjobs.SchemaError):
            task.options(conn=conn).enqueue()
        conn.rollback()


# ------------------------------------------------------------------ wrong password
RIGHT = "Right-Secret-1"
WRONG = "Wrong-Secret-2"
ROLE = "bad_input_app"


@pytest.fixture(scope="module")
def password_server() -> Iterator[Any]:
    """A private server that checks passwords (scram-sha-256), holding a migrated
    database `app` owned by role `bad_input_app` whose password is RIGHT."""
    major = next((m for m in (18, 16, 15) if binaries(m)), None)
    if major is None:
        pytest.skip("no PostgreSQL binaries to start a private server with")
    with private_server(major, password="admin-secret") as server:
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(ROLE), sql.Literal(RIGHT)
                )
            )
            conn.execute(sql.SQL("CREATE DATABASE app OWNER {}").format(sql.Identifier(ROLE)))
        good = server.dsn("app", user=ROLE, password=RIGHT)
        pgjobs.App(good).migrate()
        yield server


def _wrong_dsns(server: Any) -> list[tuple[str, dict[str, str]]]:
    """The wrong password as a URL, as key=value, and in PGPASSWORD."""
    url = f"postgresql://{ROLE}:{WRONG}@127.0.0.1:{server.port}/app"
    keyvalue = f"host=127.0.0.1 port={server.port} dbname=app user={ROLE} password='{WRONG}'"
    bare = f"host=127.0.0.1 port={server.port} dbname=app user={ROLE}"
    return [(url, {}), (keyvalue, {}), (bare, {"PGPASSWORD": WRONG})]


def _assert_clean(text: str) -> None:
    assert "password authentication failed" in text, text
    assert WRONG not in text
    assert RIGHT not in text


@pytest.mark.timeout(120)
def test_a_wrong_password_fails_clearly_and_never_shows_the_password(
    password_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    for dsn, env in _wrong_dsns(password_server):
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        app = pgjobs.App(dsn)
        task = app.task(name="pw.task")(lambda: None)
        doors: list[Any] = [
            task.enqueue,
            lambda task=task: task.enqueue_many([{}]),  # type: ignore[misc]
            lambda task=task: asyncio.run(task.enqueue_async()),  # type: ignore[misc]
            app.migrate,
            lambda app=app: asyncio.run(Worker(app).check_schema()),  # type: ignore[misc]
        ]
        for door in doors:
            with pytest.raises(pgjobs.DatabaseError) as info:
                door()
            _assert_clean(str(info.value))
            _assert_clean("".join(traceback.format_exception(info.value)))
        app.close()
        for args in (
            ["migrate"],
            ["enqueue", "pw.task"],
            ["worker", "chaosapp:app"],
            ["worker", "chaosapp:app", "--processes", "2"],
        ):
            code, output = cli(*args, dsn=dsn, env=env)
            _assert_clean(one_line_error(code, output))
            assert WRONG not in output
        for key in env:
            monkeypatch.delenv(key)


@pytest.mark.timeout(120)
def test_a_running_worker_whose_password_changes_logs_no_password(
    password_server: Any, tmp_path: Path
) -> None:
    """The password is changed and the worker's connections are cut: it keeps trying to
    reconnect, logging why, and never writes the password; SIGTERM still stops it."""
    good = password_server.dsn("app", user=ROLE, password=RIGHT)
    log = tmp_path / "worker.log"
    environ = dict(
        os.environ, PGJOBS_DSN=good, PGAPPNAME="pw-worker", PGJOBS_CHAOS_DIR=str(tmp_path)
    )
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(CHAOS), environ.get("PYTHONPATH")]))
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [str(PGJOBS), "worker", "chaosapp:app"],
            cwd=CHAOS,
            env=environ,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        with psycopg.connect(password_server.dsn(), autocommit=True) as admin:
            with psycopg.connect(password_server.dsn("app"), autocommit=True) as conn:
                deadline = time.monotonic() + 60
                while not conn.execute("SELECT count(*) FROM pgjobs.workers").fetchone()[0]:  # type: ignore[index]
                    assert time.monotonic() < deadline, log.read_text()
                    time.sleep(0.1)
            admin.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sql.Identifier(ROLE), sql.Literal("x" + WRONG)
                )
            )
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = 'pw-worker'"
            )
            deadline = time.monotonic() + 30
            while "password authentication failed" not in log.read_text():
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
            assert worker.poll() is None, "the worker died instead of retrying"
        worker.terminate()
        worker.wait(60)
        output = log.read_text()
        assert RIGHT not in output
        assert "x" + WRONG not in output
        assert "Traceback" not in output
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
        with psycopg.connect(password_server.dsn(), autocommit=True) as admin:
            admin.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sql.Identifier(ROLE), sql.Literal(RIGHT)
                )
            )
