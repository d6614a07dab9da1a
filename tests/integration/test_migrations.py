"""Migrations against a real Postgres: apply, no-op, concurrency, custom schemas, versions.

The schema snapshot in `schema_snapshot.txt` is the documented shape of the latest schema;
`PGJOBS_UPDATE_SNAPSHOT=1` rewrites it from the catalog (review the diff before committing).
"""

from __future__ import annotations

import difflib
import json
import os
import re
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

import pgjobs
from pgjobs import db as pgdb
from pgjobs.migrate import apply_migrations, check_schema, current_version, latest_version
from pgjobs.queries import migrations, queries_for

SNAPSHOT = Path(__file__).with_name("schema_snapshot.txt")
WAIT = 30.0  # upper bound for waiting on another session; never an assertion on speed

ALL_VERSIONS = [m.version for m in migrations()]
ALL_ROWS = [(m.version, m.name) for m in migrations()]


# ----------------------------------------------------------------------------- helpers
def _snapshot(conn: psycopg.Connection[Any], schema: str) -> str:
    """A canonical, server-version-independent text description of `schema`'s objects."""
    lines: list[str] = []
    with conn.transaction():
        # Qualified names in pg_get_*def output do not depend on the caller's search_path.
        conn.execute("SET LOCAL search_path TO pg_catalog")
        ns = conn.execute("SELECT oid FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()
        assert ns is not None, f"schema {schema!r} does not exist"
        nsp = ns[0]

        for name, values in conn.execute(
            "SELECT t.typname, array_agg(e.enumlabel ORDER BY e.enumsortorder)"
            " FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid"
            " WHERE t.typnamespace = %s GROUP BY t.typname ORDER BY t.typname",
            (nsp,),
        ):
            lines.append(f"enum {name}: {', '.join(values)}")

        for name, dtype, start, minv, maxv, inc, cycle, owner in conn.execute(
            "SELECT s.sequencename, s.data_type::text, s.start_value, s.min_value,"
            " s.max_value, s.increment_by, s.cycle,"
            " (SELECT d.refobjid::regclass::text || '.' || a.attname"
            "    FROM pg_depend d JOIN pg_attribute a"
            "      ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid"
            "   WHERE d.objid = format('%%I.%%I', s.schemaname, s.sequencename)::regclass"
            "     AND d.classid = 'pg_class'::regclass AND d.deptype = 'a')"
            " FROM pg_sequences s WHERE s.schemaname = %s ORDER BY s.sequencename",
            (schema,),
        ):
            lines.append(
                f"sequence {name}: {dtype} start {start} min {minv} max {maxv} "
                f"increment {inc}{' cycle' if cycle else ''}"
                + (f" owned by {owner}" if owner else "")
            )

        for kind, table, pos, column, ctype, notnull, default in conn.execute(
            "SELECT CASE c.relkind WHEN 'v' THEN 'view' WHEN 'm' THEN 'matview'"
            " ELSE 'table' END, c.relname, a.attnum, a.attname,"
            " format_type(a.atttypid, a.atttypmod), a.attnotnull,"
            " pg_get_expr(d.adbin, d.adrelid)"
            " FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid"
            " LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum"
            " WHERE c.relnamespace = %s AND c.relkind IN ('r', 'p', 'v', 'm')"
            "   AND a.attnum > 0 AND NOT a.attisdropped"
            " ORDER BY c.relname, a.attnum",
            (nsp,),
        ):
            text = f"{kind} {table} column {pos:02d} {column} {ctype}"
            text += " not null" if notnull else " null"
            if default is not None:
                text += f" default {default}"
            lines.append(text)

        # contype 'n' (NOT NULL as catalog constraints, PostgreSQL 18+) is covered above
        # by the columns' nullability, so it is left out to keep the text version-free.
        for table, name, kind, definition in conn.execute(
            "SELECT c.relname, k.conname, k.contype::text, pg_get_constraintdef(k.oid)"
            " FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid"
            " WHERE c.relnamespace = %s AND k.contype <> 'n'"
            " ORDER BY c.relname, k.conname",
            (nsp,),
        ):
            label = {"c": "check", "p": "primary key", "u": "unique", "f": "foreign key"}
            lines.append(f"constraint {table}.{name} ({label.get(kind, kind)}): {definition}")

        for name, definition in conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s"
            " ORDER BY tablename, indexname",
            (schema,),
        ):
            lines.append(f"index {name}: {definition}")

        for name, identity, arguments, result, lang, volatile, secdef, config in conn.execute(
            "SELECT p.proname, pg_get_function_identity_arguments(p.oid),"
            " pg_get_function_arguments(p.oid), pg_get_function_result(p.oid), l.lanname,"
            " p.provolatile::text, p.prosecdef, p.proconfig"
            " FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang"
            " WHERE p.pronamespace = %s"
            " ORDER BY p.proname, pg_get_function_identity_arguments(p.oid)",
            (nsp,),
        ):
            lines.append(f"function {name}({identity}) returns {result}")
            lines.append(f"function {name}({identity}) arguments: {arguments or '(none)'}")
            attrs = [f"language {lang}", {"i": "immutable", "s": "stable"}.get(volatile, "")]
            attrs += ["security definer" if secdef else ""]
            attrs += [f"set {setting}" for setting in config or []]
            lines.append(f"function {name}({identity}) " + " ".join(a for a in attrs if a))

        for table, name, definition in conn.execute(
            "SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid)"
            " FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
            " WHERE c.relnamespace = %s AND NOT t.tgisinternal"
            " ORDER BY c.relname, t.tgname",
            (nsp,),
        ):
            lines.append(f"trigger {table}.{name}: {definition}")

    return "\n".join(sorted(lines)) + "\n"


def _normalise(text: str, schema: str) -> str:
    """The snapshot of `schema` with its name written as "pgjobs", to compare schemas."""
    return re.sub(rf"\b{re.escape(schema)}\b", "pgjobs", text)


def _diff(expected: str, actual: str) -> str:
    return "".join(
        difflib.unified_diff(
            expected.splitlines(keepends=True),
            actual.splitlines(keepends=True),
            fromfile=str(SNAPSHOT.name),
            tofile="database",
        )
    )


def _migrations_rows(db: psycopg.Connection[Any], schema: str) -> list[tuple[Any, ...]]:
    query = sql.SQL("SELECT version, name FROM {}.migrations ORDER BY version").format(
        sql.Identifier(schema)
    )
    return db.execute(query).fetchall()


def _schema_exists(db: psycopg.Connection[Any], schema: str) -> bool:
    row = db.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()
    return row == (1,)


def _table_exists(db: psycopg.Connection[Any], qualified: str) -> bool:
    row = db.execute("SELECT to_regclass(%s) IS NOT NULL", (qualified,)).fetchone()
    return bool(row and row[0])


def _wait_for_lock_waiter(dsn: str) -> None:
    """Block until some session of this database waits on a heavyweight lock."""
    with psycopg.connect(dsn, autocommit=True) as watcher:
        watcher.execute("SET statement_timeout = '30s'")
        watcher.execute(
            "DO $$ BEGIN WHILE NOT EXISTS (SELECT FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock') LOOP"
            " PERFORM pg_stat_clear_snapshot(); PERFORM pg_sleep(0.01); END LOOP; END $$"
        )


# ----------------------------------------------------------------------------- migrate
def test_migrate_fresh_schema_applies_every_version_and_records_it(
    dsn: str, db: psycopg.Connection[Any]
) -> None:
    app = pgjobs.App(dsn, schema="fresh_jobs")
    try:
        assert not _schema_exists(db, "fresh_jobs")
        applied = app.migrate()
        assert applied == [m.version for m in migrations()]
        assert applied[0] == 1
        assert _migrations_rows(db, "fresh_jobs") == [(m.version, m.name) for m in migrations()]
        row = db.execute("SELECT applied_at <= now() FROM fresh_jobs.migrations").fetchone()
        assert row == (True,)
        assert _table_exists(db, "fresh_jobs.jobs")
        assert _table_exists(db, "fresh_jobs.job_history")
    finally:
        app.close()


def test_second_migrate_is_a_noop(dsn: str, db: psycopg.Connection[Any]) -> None:
    app = pgjobs.App(dsn, schema="twice")
    try:
        assert app.migrate() == ALL_VERSIONS
        before = db.execute("SELECT version, applied_at FROM twice.migrations").fetchall()
        assert app.migrate() == []
        assert app.migrate() == []
        after = db.execute("SELECT version, applied_at FROM twice.migrations").fetchall()
        assert after == before
    finally:
        app.close()


def test_the_fixture_schema_is_already_at_the_latest_version(
    app: pgjobs.App, db: psycopg.Connection[Any]
) -> None:
    assert app.migrate() == []
    assert current_version(db, "pgjobs") == latest_version()


@pytest.mark.parametrize("premade", [False, True], ids=["new-schema", "schema-made-by-a-dba"])
def test_concurrent_migrations_both_succeed_and_record_the_version_once(
    dsn: str, db: psycopg.Connection[Any], premade: bool
) -> None:
    # With the schema made by a DBA, the two race on creating the migrations table.
    if premade:
        db.execute("CREATE SCHEMA raced")
    start = threading.Barrier(2)
    results: list[list[int]] = []
    failures: list[BaseException] = []

    def migrate() -> None:
        app = pgjobs.App(dsn, schema="raced")
        try:
            start.wait(timeout=WAIT)
            results.append(app.migrate())
        except BaseException as exc:
            failures.append(exc)
        finally:
            app.close()

    threads = [threading.Thread(target=migrate) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert not failures, failures
    assert sorted(results) == [[], ALL_VERSIONS]
    assert _migrations_rows(db, "raced") == ALL_ROWS


def test_a_migration_waits_for_one_in_progress_then_finds_nothing_to_do(
    dsn: str, db: psycopg.Connection[Any]
) -> None:
    # The first migration holds its transaction (and its locks) open; the second,
    # on its own connection, must queue behind it rather than fail on half-made objects.
    results: list[list[int]] = []
    failures: list[BaseException] = []
    with psycopg.connect(dsn) as first:
        first.execute("SELECT 1")  # open a transaction that the migration joins (savepoint)
        assert apply_migrations(first, "held") == ALL_VERSIONS

        def second() -> None:
            app = pgjobs.App(dsn, schema="held")
            try:
                results.append(app.migrate())
            except BaseException as exc:
                failures.append(exc)
            finally:
                app.close()

        thread = threading.Thread(target=second)
        thread.start()
        _wait_for_lock_waiter(dsn)
        assert results == []  # still waiting for the lock
        assert not _schema_exists(db, "held")  # nothing of the first is visible yet
        first.commit()
        thread.join(WAIT)
    assert not failures, failures
    assert results == [[]]
    assert _migrations_rows(db, "held") == ALL_ROWS


def test_a_migration_of_a_migrated_schema_waits_for_one_in_progress(
    dsn: str, db: psycopg.Connection[Any]
) -> None:
    # With the schema in place the serialisation is the lock on the migrations table.
    results: list[list[int]] = []
    failures: list[BaseException] = []
    with psycopg.connect(dsn) as first:
        first.execute("SELECT 1")  # open a transaction that the migration joins (savepoint)
        assert apply_migrations(first, "pgjobs") == []  # holds the lock until commit

        def second() -> None:
            app = pgjobs.App(dsn)
            try:
                results.append(app.migrate())
            except BaseException as exc:
                failures.append(exc)
            finally:
                app.close()

        thread = threading.Thread(target=second)
        thread.start()
        _wait_for_lock_waiter(dsn)
        assert results == []
        first.commit()
        thread.join(WAIT)
    assert not failures, failures
    assert results == [[]]


def test_custom_schema_works_end_to_end(dsn: str, db: psycopg.Connection[Any]) -> None:
    app = pgjobs.App(dsn, schema="billing_jobs")
    try:
        assert app.migrate() == ALL_VERSIONS
        seen: list[int] = []

        @app.task(name="billing.charge", queue="billing")
        def charge(amount: int) -> None:
            seen.append(amount)

        job_id = charge.enqueue(42)
        row = db.execute(
            "SELECT task, queue, args FROM billing_jobs.jobs WHERE id = %s", (job_id,)
        ).fetchone()
        assert row == ("billing.charge", "billing", [42])
        assert db.execute("SELECT count(*) FROM pgjobs.jobs").fetchone() == (0,)
        assert db.execute("SELECT name FROM billing_jobs.queues").fetchall() == [("billing",)]

        # The SQL function lives in the custom schema and writes there, not to pgjobs.
        homes = db.execute(
            "SELECT n.nspname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
            " WHERE p.proname = 'enqueue' AND n.nspname IN ('pgjobs', 'billing_jobs')"
            " ORDER BY 1"
        ).fetchall()
        assert homes == [("billing_jobs",), ("pgjobs",)]
        sql_row = db.execute("SELECT billing_jobs.enqueue(task => 'billing.refund')").fetchone()
        assert sql_row is not None
        assert db.execute(
            "SELECT task FROM billing_jobs.jobs WHERE id = %s", (sql_row[0],)
        ).fetchone() == ("billing.refund",)
        assert db.execute("SELECT count(*) FROM pgjobs.jobs").fetchone() == (0,)

        # A worker of this app runs the job from the custom schema's tables.
        app.run_worker(queues=["billing"], burst=True, install_signal_handlers=False)
        assert seen == [42]
        assert db.execute(
            "SELECT state FROM billing_jobs.job_history WHERE id = %s", (job_id,)
        ).fetchone() == ("succeeded",)
    finally:
        app.close()


def test_custom_schema_notifies_on_its_own_channel(dsn: str, db: psycopg.Connection[Any]) -> None:
    app = pgjobs.App(dsn, schema="other_jobs")
    try:
        app.migrate()
        db.execute('LISTEN "other_jobs.jobs"')
        db.execute('LISTEN "pgjobs.jobs"')
        app.enqueue("some.task", queue="mail")
        note = next(db.notifies(timeout=WAIT, stop_after=1))
        assert (note.channel, note.payload) == ("other_jobs.jobs", "mail")
        assert note.channel == pgdb.notify_channel("other_jobs")
    finally:
        app.close()


def test_newer_schema_version_makes_migrate_raise(dsn: str, db: psycopg.Connection[Any]) -> None:
    db.execute("INSERT INTO pgjobs.migrations (version, name) VALUES (999, 'from_the_future')")
    app = pgjobs.App(dsn)
    try:
        with pytest.raises(pgjobs.SchemaError) as info:
            app.migrate()
    finally:
        app.close()
    message = str(info.value)
    assert "999" in message
    assert "'pgjobs'" in message
    assert f"knows up to {latest_version()}" in message
    assert "upgrade pgjobs" in message
    assert _migrations_rows(db, "pgjobs") == [*ALL_ROWS, (999, "from_the_future")]


def test_newer_version_in_an_empty_schema_applies_nothing(
    dsn: str, db: psycopg.Connection[Any]
) -> None:
    # Only a migrations table, recorded by a future pgjobs: nothing may be created next to it.
    db.execute("CREATE SCHEMA future")
    with db.cursor() as cur:
        cur.execute(queries_for("future")["create_migrations_table"])
    future = latest_version() + 1
    db.execute("INSERT INTO future.migrations (version, name) VALUES (%s, 'next')", (future,))
    app = pgjobs.App(dsn, schema="future")
    try:
        with pytest.raises(pgjobs.SchemaError, match=rf"\[{future}\].*upgrade pgjobs"):
            app.migrate()
    finally:
        app.close()
    assert not _table_exists(db, "future.jobs")
    assert _migrations_rows(db, "future") == [(future, "next")]


def test_worker_refuses_a_schema_newer_than_the_code(
    app: pgjobs.App, db: psycopg.Connection[Any]
) -> None:
    db.execute("INSERT INTO pgjobs.migrations (version, name) VALUES (999, 'from_the_future')")
    with pytest.raises(pgjobs.SchemaError, match="newer than this pgjobs knows"):
        app.run_worker(burst=True, install_signal_handlers=False)


def test_worker_refuses_an_unmigrated_schema(dsn: str) -> None:
    app = pgjobs.App(dsn, schema="never_migrated")
    try:
        with pytest.raises(pgjobs.SchemaError, match="run `pgjobs migrate`"):
            app.run_worker(burst=True, install_signal_handlers=False)
    finally:
        app.close()


# ----------------------------------------------------------------------------- versions
def test_current_version_reads_zero_latest_and_newer(db: psycopg.Connection[Any]) -> None:
    assert current_version(db, "no_such_schema") == 0
    db.execute("CREATE SCHEMA empty_one")
    assert current_version(db, "empty_one") == 0
    assert current_version(db, "pgjobs") == latest_version()
    db.execute("INSERT INTO pgjobs.migrations (version, name) VALUES (7, 'later')")
    assert current_version(db, "pgjobs") == 7


def test_check_schema_accepts_exactly_the_latest_version() -> None:
    check_schema(latest_version(), "pgjobs")  # does not raise


def test_check_schema_message_for_a_missing_schema() -> None:
    with pytest.raises(pgjobs.SchemaError) as info:
        check_schema(0, "sales")
    assert str(info.value) == "the pgjobs schema 'sales' does not exist: run `pgjobs migrate`"


@pytest.mark.skipif(
    latest_version() < 2, reason="only migration 1 exists, so no schema can be older"
)
def test_check_schema_message_for_an_older_schema() -> None:
    older = latest_version() - 1
    with pytest.raises(pgjobs.SchemaError) as info:
        check_schema(older, "sales")
    message = str(info.value)
    assert f"at version {older}" in message
    assert f"needs {latest_version()}" in message
    assert "run `pgjobs migrate`" in message


def test_check_schema_message_for_a_newer_schema() -> None:
    newer = latest_version() + 1
    with pytest.raises(pgjobs.SchemaError) as info:
        check_schema(newer, "sales")
    message = str(info.value)
    assert f"'sales' is at version {newer}" in message
    assert f"newer than this pgjobs knows ({latest_version()})" in message
    assert "upgrade pgjobs" in message
    assert "migrate" not in message  # migrating cannot help here


def test_schema_error_is_a_pgjobs_error() -> None:
    with pytest.raises(pgjobs.PgJobsError):
        check_schema(0, "pgjobs")


# ----------------------------------------------------------------------------- snapshot
def test_schema_matches_the_snapshot(db: psycopg.Connection[Any]) -> None:
    actual = _snapshot(db, "pgjobs")
    if os.environ.get("PGJOBS_UPDATE_SNAPSHOT"):
        SNAPSHOT.write_text(actual, encoding="utf-8")
        pytest.skip(f"wrote {SNAPSHOT.name}; review it and run again without the variable")
    expected = SNAPSHOT.read_text(encoding="utf-8")
    if actual != expected:
        pytest.fail(
            "the migrated schema differs from schema_snapshot.txt (PGJOBS_UPDATE_SNAPSHOT=1 "
            "rewrites it):\n" + _diff(expected, actual),
            pytrace=False,
        )


def test_a_custom_schema_has_the_same_shape_as_the_default(
    dsn: str, db: psycopg.Connection[Any]
) -> None:
    app = pgjobs.App(dsn, schema="shape_twin")
    try:
        app.migrate()
    finally:
        app.close()
    twin = _normalise(_snapshot(db, "shape_twin"), "shape_twin")
    expected = SNAPSHOT.read_text(encoding="utf-8")
    assert twin == expected, _diff(expected, twin)


def test_migrations_from_zero_equal_the_snapshot_schema(
    dsn: str, db: psycopg.Connection[Any]
) -> None:
    # Drop everything the fixture made and migrate the default schema again from nothing.
    db.execute("DROP SCHEMA pgjobs CASCADE")
    app = pgjobs.App(dsn)
    try:
        assert app.migrate() == [m.version for m in migrations()]
    finally:
        app.close()
    actual = _snapshot(db, "pgjobs")
    expected = SNAPSHOT.read_text(encoding="utf-8")
    assert actual == expected, _diff(expected, actual)


def test_job_state_enum_matches_python(db: psycopg.Connection[Any]) -> None:
    row = db.execute("SELECT enum_range(NULL::pgjobs.job_state)::text[]").fetchone()
    assert row is not None
    assert row[0] == [state.value for state in pgjobs.JobState]
    assert [state.value for state in pgjobs.JobState if state.finished] == [
        "succeeded",
        "dead",
        "cancelled",
    ]


def test_table_state_checks_split_unfinished_and_finished_states(
    db: psycopg.Connection[Any],
) -> None:
    # jobs holds exactly the unfinished states, job_history exactly the finished ones.
    into_jobs = "INSERT INTO pgjobs.jobs (task, state) VALUES ('t', %s)"
    into_history = (
        "INSERT INTO pgjobs.job_history (id, task, queue, args, kwargs, priority, state,"
        " attempt, run_at, enqueued_at, errors)"
        " SELECT coalesce(max(id), 0) + 1, 't', 'q', '[]', '{}', 0, %s, 1, now(), now(), '[]'"
        " FROM pgjobs.job_history"
    )
    for state in pgjobs.JobState:
        wrong, right = (into_jobs, into_history) if state.finished else (into_history, into_jobs)
        with pytest.raises(psycopg.errors.CheckViolation):
            db.execute(wrong, (state,))
        db.execute(right, (state,))
    assert _count_rows(db, "pgjobs.jobs") == 2
    assert _count_rows(db, "pgjobs.job_history") == 3


def _count_rows(db: psycopg.Connection[Any], table: str) -> int:
    row = db.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


# ----------------------------------------------------------------------------- plan
def _plan_nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    nodes = [plan]
    for child in plan.get("Plans", []):
        nodes.extend(_plan_nodes(child))
    return nodes


def _claim_inner_select() -> str:
    """The per-queue SELECT of the claim query, for a single queue given as %(queue)s."""
    text = queries_for("pgjobs")["claim_jobs"].decode()
    match = re.search(r"CROSS JOIN LATERAL \((.*?)\)\s+c\b", text, re.DOTALL)
    assert match, "claim_jobs no longer has the per-queue LATERAL select"
    inner = match.group(1)
    assert "q.name" in inner
    return inner.replace("q.name", "%(queue)s")


@pytest.fixture
def loaded_jobs(app: pgjobs.App, db: psycopg.Connection[Any]) -> None:
    """A few thousand queued jobs over several queues and priorities, some running."""
    for queue, count in (("default", 3000), ("mail", 1500), ("reports", 500)):
        for priority in (0, 5):
            task = app.task(name=f"plan.{queue}.{priority}", queue=queue, priority=priority)(
                _plan_handler
            )
            task.enqueue_many([{"n": n} for n in range(count // 2)])
    db.execute("UPDATE pgjobs.jobs SET state = 'running', worker_id = 1 WHERE id % 10 = 0")
    db.execute("ANALYZE pgjobs.jobs")


def _plan_handler(n: int) -> None:  # pragma: no cover - never runs
    del n


@pytest.mark.usefixtures("loaded_jobs")
def test_claim_select_uses_the_claim_index_without_sorting(db: psycopg.Connection[Any]) -> None:
    inner = _claim_inner_select()
    row = db.execute(
        ("EXPLAIN (FORMAT JSON) " + inner).encode(), {"queue": "mail", "limit": 10}
    ).fetchone()
    assert row is not None
    plan = row[0] if isinstance(row[0], list) else json.loads(row[0])
    nodes = _plan_nodes(plan[0]["Plan"])
    assert any(n.get("Index Name") == "jobs_claim_idx" for n in nodes), nodes
    assert not [n for n in nodes if n["Node Type"] in ("Sort", "Incremental Sort")], nodes
    assert not [n for n in nodes if n["Node Type"] == "Seq Scan"], nodes

    text = "\n".join(
        r[0] for r in db.execute(("EXPLAIN " + inner).encode(), {"queue": "mail", "limit": 10})
    )
    assert "jobs_claim_idx" in text


@pytest.mark.usefixtures("loaded_jobs")
def test_whole_claim_query_scans_the_claim_index(db: psycopg.Connection[Any]) -> None:
    query = queries_for("pgjobs")["claim_jobs"]
    params = {"queues": ["default", "mail"], "limit": 50, "worker_id": 1}
    running = "SELECT count(*) FROM pgjobs.jobs WHERE state = 'running'"
    before = db.execute(running).fetchone()
    plan = "\n".join(r[0] for r in db.execute(b"EXPLAIN " + query, params))
    assert "jobs_claim_idx" in plan, plan
    assert db.execute(running).fetchone() == before  # explained, not run
