"""Input limits at every door, against a real Postgres: the Python API (sync and async, one
job and many, by task and by name), the `pgjobs enqueue` CLI and the SQL function refuse each
bad value with one line naming the field and the limit, before any I/O, and write nothing;
the worker's log lines escape control characters that rows carry."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from cli_runner import error_line, pgjobs

import pgjobs as pj
from pgjobs import InvalidInput
from pgjobs.db import errors_translated
from pgjobs.logs import TextFormatter

Conn = psycopg.Connection[Any]


def deep(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def _count(db: Conn) -> int:
    return int(db.execute("SELECT count(*) FROM pgjobs.jobs").fetchone()[0])  # type: ignore[index]


# (id, options for Task.options / App.enqueue, kwargs, the message)
BAD: list[tuple[str, dict[str, Any], dict[str, Any], str]] = [
    (
        "priority",
        {"priority": 2**40},
        {},
        r"priority must be an int from -2147483648 to 2147483647",
    ),
    (
        "max_attempts",
        {"max_attempts": 2**40},
        {},
        r"max_attempts must be an int >= 1 and <= 2147483647",
    ),
    (
        "dedup-10KB",
        {"dedup_key": "k" * 10_240},
        {},
        r"dedup_key is 10,240 bytes of UTF-8, over the limit of 512",
    ),
    ("dedup-NUL", {"dedup_key": "a\x00b"}, {}, r"dedup_key must not contain NUL"),
    (
        "dedup-surrogate",
        {"dedup_key": "a\ud800"},
        {},
        r"dedup_key must not contain lone surrogates",
    ),
    ("queue-surrogate", {"queue": "q\ud800"}, {}, r"queue name must not contain lone surrogates"),
    ("queue-bidi", {"queue": "q\u202e"}, {}, r"queue name must not contain control characters"),
    ("deep-json", {}, {"v": deep(5_000)}, r"argument 'v' nests deeper than 100 levels"),
    ("huge-int", {}, {"v": 10**5000}, r"argument 'v' holds an integer of more than 4,300 digits"),
    ("surrogate-arg", {}, {"v": "\ud800"}, r"argument 'v' .*lone surrogate"),
]


@pytest.mark.parametrize(
    ("options", "kwargs", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD]
)
def test_every_python_door_refuses_before_any_io(
    app: pj.App, dsn: str, db: Conn, options: dict[str, Any], kwargs: dict[str, Any], message: str
) -> None:
    task = app.task(name="limits.task")(lambda **kw: None)
    doors: list[Callable[[], Any]] = [
        lambda: task.options(**options).enqueue(**kwargs),
        lambda: asyncio.run(task.options(**options).enqueue_async(**kwargs)),
        lambda: app.enqueue("limits.by_name", kwargs=kwargs, **options),
        lambda: asyncio.run(app.enqueue_async("limits.by_name", kwargs=kwargs, **options)),
    ]
    if "dedup_key" not in options:  # enqueue_many takes none
        doors.append(lambda: task.options(**options).enqueue_many([{"ok": 1}, kwargs]))
        doors.append(lambda: asyncio.run(task.options(**options).enqueue_many_async([kwargs])))
    for door in doors:
        with pytest.raises(InvalidInput, match=message) as info:
            door()
        assert "\n" not in str(info.value)
    with psycopg.connect(dsn) as conn:  # the caller's transaction stays usable
        conn.execute("CREATE TEMP TABLE orders (id int)")
        with pytest.raises(InvalidInput, match=message):
            task.options(conn=conn, **options).enqueue(**kwargs)
        conn.execute("INSERT INTO orders VALUES (1)")
        conn.commit()
    assert _count(db) == 0


@pytest.mark.parametrize(
    "name",
    ["mail\u202esend", "mail\nsend", "mail\x1b[31m", "mail\ud800"],
    ids=["bidi", "newline", "esc", "surrogate"],
)
def test_task_names_with_control_characters_are_refused_everywhere(
    app: pj.App, db: Conn, name: str
) -> None:
    with pytest.raises(InvalidInput, match="task name must not contain"):
        app.task(name=name)(lambda: None)
    with pytest.raises(InvalidInput, match="task name must not contain"):
        app.enqueue(name)
    assert _count(db) == 0


# ----------------------------------------------------------------------------------- CLI
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["t", "--kwargs", '{"v": ' + "[" * 5_000 + "]" * 5_000 + "}"],
            "--kwargs nests deeper than 100 levels",
        ),
        (
            ["t", "--kwargs", json.dumps({"v": deep(150)})],
            "argument 'v' nests deeper than 100 levels",
        ),
        (
            ["t", "--kwargs", '{"v": ' + "9" * 5_000 + "}"],
            "--kwargs holds an integer of more than 4,300 digits",
        ),
        (
            ["t", "--args", "[" + "9" * 5_000 + "]"],
            "--args holds an integer of more than 4,300 digits",
        ),
        (
            ["t", "--kwargs", '{"v": "\\ud800"}'],
            "argument 'v' is not JSON serializable: a string holds a lone surrogate",
        ),
        (
            ["t", "--kwargs", '{"v": "\\u0000"}'],
            "argument 'v' is not JSON serializable: Postgres jsonb cannot store the NUL",
        ),
        (["t", "--priority", str(2**40)], "priority must be an int from -2147483648 to 2147483647"),
        (
            ["t", "--dedup-key", "k" * 10_240],
            "dedup_key is 10,240 bytes of UTF-8, over the limit of 512",
        ),
        (["t\u202e"], "task name must not contain control characters"),
        (["t", "--queue", "q\x1b"], "queue name must not contain control characters"),
    ],
    ids=[
        "deep-parse",
        "deep",
        "huge-int",
        "huge-int-args",
        "surrogate",
        "nul",
        "priority",
        "dedup",
        "bidi-task",
        "esc-queue",
    ],
)
def test_cli_enqueue_refuses_in_one_line(dsn: str, db: Conn, argv: list[str], message: str) -> None:
    result = pgjobs("enqueue", *argv, dsn=dsn, expect=1)
    line = error_line(result)
    assert message in line, line
    assert len(line) < 300, line  # no echo of the whole value
    assert _count(db) == 0


# ----------------------------------------------------------------------------------- SQL
@pytest.mark.parametrize(
    ("call", "message"),
    [
        ("task => E'mail\\u202esend'", "task name must not contain control characters"),
        ("task => E'mail\\nsend'", "task name must not contain control characters"),
        ("task => 't', queue => E'q\\x1b'", "queue name must not contain control characters"),
        ("task => '   '", "task name must be a non-empty string of at most 200 characters"),
        ("task => NULL", "task name must be a non-empty string"),
        (
            "task => 't', queue => repeat('q', 201)",
            "queue name must be a non-empty string of at most 200",
        ),
        (
            "task => 't', dedup_key => repeat('k', 10240)",
            "dedup_key is 10240 bytes, over the limit of 512",
        ),
        (
            "task => 't', dedup_key => repeat('é', 257)",
            "dedup_key is 514 bytes, over the limit of 512",
        ),
        ("task => 't', max_attempts => -1", "max_attempts must be >= 1, got -1"),
        ("task => 't', args => '\"x\"'", "args must be a JSON array"),
        ("task => 't', kwargs => 'null'", "kwargs must be a JSON object"),
        (
            "task => 't', args => ('[' || repeat('[', 101) || repeat(']', 101) || ']')::jsonb",
            "args nest deeper than 100 levels of arrays/objects (the limit)",
        ),
        (
            "task => 't', kwargs => "
            "('{\"a\": ' || repeat('{\"b\": ', 5000) || '1' || repeat('}', 5000) || '}')::jsonb",
            "kwargs nest deeper than 100 levels of arrays/objects (the limit)",
        ),
        (
            "task => 't', kwargs => ('{\"a\": [1, -' || repeat('9', 4301) || ']}')::jsonb",
            "kwargs hold a number of more than 4,300 digits (the limit)",
        ),
        (
            "task => 't', args => '[\"x\", {\"a\": 1e4300}]'",
            "args hold a number of more than 4,300 digits",
        ),
    ],
)
def test_the_sql_function_refuses_with_a_clear_sqlstate(
    db: Conn, dsn: str, call: str, message: str
) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=re.escape(message)):
        db.execute(f"SELECT pgjobs.enqueue({call})")
    db.rollback()
    # Through pgjobs' error translation: an InvalidInput, not "Postgres refused the operation".
    with psycopg.connect(dsn) as conn, pytest.raises(InvalidInput) as info, errors_translated(dsn):
        conn.execute(f"SELECT pgjobs.enqueue({call})")
    assert (
        str(info.value) == f"Postgres refused the job: {info.value.__cause__.diag.message_primary}"
    )  # type: ignore[union-attr]
    assert message in str(info.value)
    assert _count(db) == 0


def test_the_sql_function_accepts_values_at_the_limits(db: Conn) -> None:
    job_id = db.execute(
        "SELECT pgjobs.enqueue(task => repeat('t', 200), queue => repeat('q', 200),"
        " dedup_key => repeat('k', 512), max_attempts => 2147483647, priority => -2147483648,"
        " args => ('[' || repeat('[', 100) || repeat(']', 100) || ', '"
        "          || repeat('9', 4300) || ']')::jsonb,"
        " kwargs => ('{\"a\": ' || repeat('{\"b\": ', 100) || '-1e4299'"
        "            || repeat('}', 100) || '}')::jsonb)"
    ).fetchone()[0]  # type: ignore[index]
    db.commit()
    assert _count(db) == 1
    assert db.execute("SELECT task FROM pgjobs.jobs WHERE id = %s", (job_id,)).fetchone() == (
        "t" * 200,
    )


def test_the_python_api_accepts_values_at_the_limits(app: pj.App, db: Conn) -> None:
    task = app.task(name="limits.edge", priority=2**31 - 1, max_attempts=2**31 - 1)(
        lambda **kw: None
    )
    task.options(dedup_key="é" * 256).enqueue(v=deep(100), n=10**4300 - 1)
    task.enqueue_many([{"v": deep(100)}])
    assert _count(db) == 2


# ------------------------------------------------------------------------------ log lines
def test_worker_log_lines_escape_control_characters_from_rows(app: pj.App, db: Conn) -> None:
    """A row written behind pgjobs' back (a superuser's INSERT) with a task name full of
    terminal and bidi controls: the worker's log line shows them escaped."""
    hostile = "evil\u202e\x1b[2J\nFAKE 00:00 INFO all good\u2028"
    db.execute(
        "INSERT INTO pgjobs.jobs (task, queue, max_attempts) VALUES (%s, 'default', 1)", (hostile,)
    )
    db.commit()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TextFormatter())
    logger = logging.getLogger("pgjobs")
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.INFO)
    try:
        app.run_worker(burst=True, install_signal_handlers=False)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
    output = stream.getvalue()
    lines = [line for line in output.splitlines() if "evil" in line]
    assert lines, output
    for line in lines:
        assert line.isprintable(), repr(line)
        assert "\\u202e" in line
    assert not any(line.startswith("FAKE") for line in output.splitlines())
