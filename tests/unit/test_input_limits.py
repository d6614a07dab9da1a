"""Input limits of the pure enqueue layer (pgjobs.limits, pgjobs.job): every bad value gets
one InvalidInput line naming the field and the limit, before any I/O; log lines escape what
rows carry."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import pytest

from pgjobs import InvalidInput, PgJobsError
from pgjobs.job import EnqueueOptions, encode_arguments, encode_many
from pgjobs.limits import (
    INT_MAX,
    INT_MIN,
    MAX_DEDUP_KEY_BYTES,
    MAX_INT_DIGITS,
    MAX_JSON_DEPTH,
    check_name,
    structure_problem,
)
from pgjobs.logs import JsonFormatter, TextFormatter, _logfmt, escape_unprintable


def nested(depth: int, leaf: Any = 1, kind: str = "list") -> Any:
    value = leaf
    for _ in range(depth):
        value = [value] if kind == "list" else {"k": value}
    return value


def test_invalid_input_is_a_pgjobs_error_and_a_value_and_type_error() -> None:
    assert issubclass(InvalidInput, PgJobsError)
    assert issubclass(InvalidInput, ValueError)
    assert issubclass(InvalidInput, TypeError)


# --- priority, max_attempts, dedup_key --------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"priority": 2**40}, rf"priority must be an int from {INT_MIN} to {INT_MAX}, got {2**40}"),
        ({"priority": INT_MIN - 1}, "priority must be an int from"),
        ({"max_attempts": 2**40}, rf"max_attempts must be an int >= 1 and <= {INT_MAX}"),
        ({"max_attempts": 0}, "max_attempts must be an int >= 1"),
        ({"dedup_key": "k" * 10_000}, "dedup_key is 10,000 bytes of UTF-8, over the limit of 512"),
        ({"dedup_key": "é" * 257}, "dedup_key is 514 bytes"),
        ({"dedup_key": "a\x00b"}, "dedup_key must not contain NUL"),
        ({"dedup_key": "a\ud800"}, "dedup_key must not contain lone surrogates"),
        ({"queue": "q\ud800"}, "queue name must not contain lone surrogates"),
        ({"queue": "q\u202e"}, "queue name must not contain control characters"),
    ],
)
def test_out_of_range_options_are_refused_in_one_line(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message) as info:
        EnqueueOptions(**options)
    assert "\n" not in str(info.value)


def test_values_at_the_limits_are_accepted() -> None:
    EnqueueOptions(priority=INT_MAX, max_attempts=INT_MAX, dedup_key="k" * MAX_DEDUP_KEY_BYTES)
    EnqueueOptions(priority=INT_MIN, max_attempts=1, dedup_key="é" * (MAX_DEDUP_KEY_BYTES // 2))


# --- names ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    ["\x00", "\n", "\r", "\t", "\x1b[31m", "\x7f", "\x85", "\u202e", "\u2066", "\u2028", "\ud800"],
)
def test_names_refuse_control_characters_and_lone_surrogates(bad: str) -> None:
    with pytest.raises(InvalidInput, match="task name must not contain") as info:
        check_name("task", f"mail{bad}send")
    assert bad not in str(info.value)  # the name is shown escaped


@pytest.mark.parametrize("name", ["mail.send", "envoi du courrier ✉", "q'; --", "\\N", "日本"])
def test_names_keep_ordinary_characters(name: str) -> None:
    assert check_name("queue", name) == name


# --- JSON arguments -------------------------------------------------------------------------


def test_arguments_nested_up_to_the_limit_are_accepted() -> None:
    args, kwargs = encode_arguments("t", [nested(MAX_JSON_DEPTH)], {"d": nested(100, kind="d")})
    assert json.loads(args) == [nested(MAX_JSON_DEPTH)]
    assert json.loads(kwargs) == {"d": nested(100, kind="d")}
    assert encode_many("t", [{"d": nested(MAX_JSON_DEPTH)}])


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 990, 5_000, 100_000])
@pytest.mark.parametrize("kind", ["list", "dict"])
def test_arguments_nested_too_deep_are_refused_naming_the_argument(depth: int, kind: str) -> None:
    message = rf"task 't': argument 'deep' nests deeper than {MAX_JSON_DEPTH} levels"
    with pytest.raises(InvalidInput, match=message):
        encode_arguments("t", (), {"ok": 1, "deep": nested(depth, kind=kind)})
    with pytest.raises(InvalidInput, match=message):
        encode_many("t", [{"ok": 1}, {"deep": nested(depth, kind=kind)}])
    with pytest.raises(InvalidInput, match="positional argument 1 nests deeper"):
        encode_arguments("t", [1, nested(depth, kind=kind)], {})


def test_huge_integers_are_refused_naming_the_argument() -> None:
    fits = 10**MAX_INT_DIGITS - 1  # 4,300 digits
    assert encode_arguments("t", [fits, -fits], {})
    for huge in (10**MAX_INT_DIGITS, -(10**MAX_INT_DIGITS), 10**20_000):
        message = r"task 't': argument 'n' holds an integer of more than 4,300 digits"
        with pytest.raises(InvalidInput, match=message):
            encode_arguments("t", (), {"n": [1, {"x": huge}]})
        with pytest.raises(InvalidInput, match=message):
            encode_many("t", [{"n": huge}])


def test_huge_integers_are_refused_even_when_python_could_print_them() -> None:
    # With the interpreter's int/str limit lifted, the encoder succeeds; the worker's would not.
    previous = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        with pytest.raises(InvalidInput, match="more than 4,300 digits"):
            encode_arguments("t", [10**5000], {})
    finally:
        sys.set_int_max_str_digits(previous)


def test_structure_problem_is_iterative_and_exact() -> None:
    assert structure_problem(nested(MAX_JSON_DEPTH)) is None
    assert structure_problem(nested(MAX_JSON_DEPTH + 1)) is not None
    assert structure_problem(nested(1_000_000)) is not None  # no RecursionError
    assert structure_problem({"a": [True, 1.5e308, "x" * 5000, None]}) is None


@pytest.mark.parametrize(
    ("value", "reason"),
    [("a\x00b", "NUL"), ("caf\udce9", "surrogate"), ({"k\ud800": 1}, "surrogate")],
)
def test_strings_postgres_cannot_store_stay_refused(value: Any, reason: str) -> None:
    with pytest.raises(InvalidInput, match=rf"argument 'v' .*{reason}"):
        encode_arguments("t", (), {"v": value})


# --- log lines ------------------------------------------------------------------------------


HOSTILE_NAME = "evil\u202e\x1b[2J\nFAKE LINE\u2028\x85\ud800"


def test_logfmt_escapes_control_characters_from_rows() -> None:
    line = _logfmt({"task": HOSTILE_NAME, "queue": "q\tx", "attempt": 1})
    assert line.isprintable()
    assert "\\u202e" in line
    assert "\\u001b" in line
    assert "\\n" in line
    assert "\\ud800" in line
    assert "q\\tx" in line


def test_formatters_escape_unprintable_message_text_but_keep_tracebacks() -> None:
    record = logging.LogRecord(
        "pgjobs.jobs", logging.ERROR, __file__, 1, "job %s", (HOSTILE_NAME,), None
    )
    record.task = HOSTILE_NAME
    text = TextFormatter().format(record)
    assert text.isprintable()
    assert "\\u202e" in text
    data = JsonFormatter().format(record)
    assert data.isprintable()
    assert json.loads(data)["task"] == HOSTILE_NAME  # still exact for a JSON reader
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record.exc_info = sys.exc_info()
    with_traceback = TextFormatter().format(record)
    assert with_traceback.splitlines()[0].isprintable()
    assert "Traceback" in with_traceback.splitlines()[1]


def test_escape_unprintable_leaves_printable_text_alone() -> None:
    assert escape_unprintable("mail.send ✉ q'; --") == "mail.send ✉ q'; --"
