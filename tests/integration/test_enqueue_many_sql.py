"""pgjobs.enqueue_many(), the SQL door of `enqueue_many`: ids, defaults, limits, NOTIFY.

Producers hold no privilege on jobs (sql/roles.sql), so this SECURITY DEFINER function is
their only bulk path; it applies the same input limits as pgjobs.enqueue().
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg import errors as pg_errors

import pgjobs

WAIT = 30.0  # upper bound for waiting on a notification; never an assertion on speed

Conn = psycopg.Connection[Any]


def _many(db: Conn, call: str, kwargs: list[str]) -> list[int]:
    row = db.execute(
        f"SELECT pgjobs.enqueue_many(kwargs => %s::jsonb[], {call})",
        (kwargs,),
    ).fetchone()
    assert row is not None
    return list(row[0])


def test_ids_come_in_item_order_with_the_defaults(db: Conn) -> None:
    ids = _many(db, "task => 'many.t'", ['{"n": 1}', '{"n": 2}', "{}", '{"n": 4}'])
    assert ids == sorted(ids)
    assert len(set(ids)) == 4
    rows = db.execute(
        "SELECT id, task, queue, args, kwargs, priority, run_at <= now(), max_attempts, state"
        " FROM pgjobs.jobs ORDER BY id"
    ).fetchall()
    assert [row[0] for row in rows] == ids
    assert [row[4] for row in rows] == [{"n": 1}, {"n": 2}, {}, {"n": 4}]
    assert {(r[1], r[2], str(r[3]), r[5], r[6], r[7], r[8]) for r in rows} == {
        ("many.t", "default", "[]", 0, True, None, "queued")
    }


def test_every_argument_and_nulls_fall_back_to_defaults(db: Conn) -> None:
    _many(
        db,
        "task => 'many.t', queue => 'bulk', priority => 7,"
        " run_at => '2031-01-01T00:00:00Z', max_attempts => 3",
        ["{}"],
    )
    _many(db, "task => 'many.n', queue => NULL, priority => NULL, run_at => NULL", ["{}"])
    rows = db.execute(
        "SELECT queue, priority, run_at > now() + interval '1 year', max_attempts"
        " FROM pgjobs.jobs ORDER BY id"
    ).fetchall()
    assert rows == [("bulk", 7, True, 3), ("default", 0, False, None)]


def test_an_empty_array_enqueues_nothing(db: Conn) -> None:
    assert _many(db, "task => 'many.t'", []) == []
    row = db.execute("SELECT pgjobs.enqueue_many(task => 'many.t', kwargs => NULL)").fetchone()
    assert row == ([],)
    assert db.execute("SELECT count(*) FROM pgjobs.jobs").fetchone() == (0,)


@pytest.mark.parametrize(
    ("call", "kwargs", "message"),
    [
        ("task => ''", ["{}"], "task name must be a non-empty string of at most 200 characters"),
        ("task => repeat('t', 201)", ["{}"], "task name must be a non-empty"),
        ("task => 't', queue => ''", ["{}"], "queue name must be a non-empty"),
        ("task => E't\\u202e'", ["{}"], "task name must not contain control characters"),
        ("task => 't', queue => E'q\\n'", ["{}"], "queue name must not contain control"),
        ("task => 't', max_attempts => 0", ["{}"], "max_attempts must be >= 1, got 0"),
        ("task => 't'", ["{}", "[1]"], r"kwargs must be a JSON object \(item 2\)"),
        (
            "task => 't'",
            ["{}", "{}", '{"a": ' + "[" * 101 + "]" * 101 + "}"],
            r"kwargs nest deeper than 100 levels .*item 3\)",
        ),
        ("task => 't'", ['{"n": 1' + "0" * 4300 + "}"], r"more than 4,300 digits .*item 1\)"),
    ],
)
def test_refuses_what_enqueue_refuses_naming_the_item(
    db: Conn, call: str, kwargs: list[str], message: str
) -> None:
    with pytest.raises(pg_errors.InvalidParameterValue, match=message):
        _many(db, call, kwargs)
    assert db.execute("SELECT count(*) FROM pgjobs.jobs").fetchone() == (0,)


def test_the_deepest_allowed_kwargs_pass(db: Conn) -> None:
    assert len(_many(db, "task => 't'", ['{"a": ' + "[" * 100 + "]" * 100 + "}"])) == 1


def test_one_notification_per_queue_per_call(dsn: str, db: Conn) -> None:
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute('LISTEN "pgjobs.jobs"')
        _many(db, "task => 't', queue => 'later', run_at => now() + interval '1 h'", ["{}"])
        _many(db, "task => 't', queue => 'bulk'", ["{}"] * 500)
        db.execute("SELECT pgjobs.enqueue(task => 'marker', queue => 'marker')")
        notes = [n.payload for n in listener.notifies(timeout=WAIT, stop_after=2)]
    assert notes == ["bulk", "marker"]


def test_the_function_is_not_executable_by_public(db: Conn) -> None:
    rows = db.execute(
        "SELECT p.proname, p.prosecdef, has_function_privilege('public', p.oid, 'EXECUTE'),"
        " array_to_string(p.proconfig, ',')"
        " FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE n.nspname = 'pgjobs' AND p.proname IN ('enqueue', 'enqueue_many')"
        " ORDER BY 1"
    ).fetchall()
    path = "search_path=pg_catalog, pgjobs, pg_temp"
    assert rows == [("enqueue", True, False, path), ("enqueue_many", True, False, path)]


def test_python_enqueue_many_in_a_custom_schema(dsn: str, db: Conn) -> None:
    app = pgjobs.App(dsn, schema="Bulk_Jobs")
    try:
        app.migrate()
        task = app.task(name="many.custom")(lambda n=0: None)
        ids = task.enqueue_many([{"n": 1}, {"n": 2}])
        rows = db.execute('SELECT id, kwargs FROM "Bulk_Jobs".jobs ORDER BY id').fetchall()
        assert rows == [(ids[0], {"n": 1}), (ids[1], {"n": 2})]
        config = db.execute(
            "SELECT array_to_string(proconfig, ',') FROM pg_proc"
            " WHERE proname = 'enqueue_many' AND pronamespace = '\"Bulk_Jobs\"'::regnamespace"
        ).fetchone()
        assert config == ('search_path=pg_catalog, "Bulk_Jobs", pg_temp',)
    finally:
        app.close()
