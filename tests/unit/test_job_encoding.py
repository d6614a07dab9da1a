"""The pure enqueue layer in pgjobs.job: validation, JSON encoding, enqueue_many params, rows."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from pgjobs.job import (
    MAX_NAME_LENGTH,
    EnqueueOptions,
    Job,
    Undecodable,
    check_name,
    encode_arguments,
    encode_many,
    enqueue_params,
    job_from_row,
    many_params,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


# --- encode_arguments -----------------------------------------------------------------------


def test_encode_arguments_compact_json() -> None:
    args, kwargs = encode_arguments("t", [1, "a", None], {"x": [1, 2], "y": {"z": True}})
    assert args == '[1,"a",null]'
    assert kwargs == '{"x":[1,2],"y":{"z":true}}'
    assert json.loads(args) == [1, "a", None]


def test_encode_arguments_accepts_tuples_and_unicode() -> None:
    args, kwargs = encode_arguments("t", (1, 2), {"name": "héllo ☃"})
    assert json.loads(args) == [1, 2]
    assert json.loads(kwargs) == {"name": "héllo ☃"}


def test_encode_arguments_empty() -> None:
    assert encode_arguments("t", (), {}) == ("[]", "{}")


def test_non_json_positional_names_task_and_index() -> None:
    with pytest.raises(TypeError, match=r"task 'mail\.send': positional argument 1") as info:
        encode_arguments("mail.send", ["ok", object()], {})
    assert "object" in str(info.value)


def test_non_json_keyword_names_task_and_argument() -> None:
    with pytest.raises(TypeError, match=r"task 'mail\.send': argument 'when'") as info:
        encode_arguments("mail.send", [], {"to": "a@b.c", "when": datetime.now(UTC)})
    assert "datetime" in str(info.value)


@pytest.mark.parametrize("value", [b"bytes", {1, 2}, Decimal("1.5"), object])
def test_non_json_nested_value_names_argument(value: object) -> None:
    with pytest.raises(TypeError, match="argument 'payload' is not JSON serializable"):
        encode_arguments("t", [], {"payload": {"inner": [value]}})


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_float_positional_rejected(value: float) -> None:
    with pytest.raises(TypeError, match=r"task 't': positional argument 0 .*not valid JSON"):
        encode_arguments("t", [value], {})


def test_non_finite_float_keyword_rejected() -> None:
    with pytest.raises(TypeError, match=r"argument 'ratio' is not JSON serializable: inf"):
        encode_arguments("t", [], {"ratio": math.inf})


def test_nested_nan_rejected() -> None:
    with pytest.raises(TypeError, match="argument 'xs'"):
        encode_arguments("t", [], {"xs": [1.0, math.nan]})


@pytest.mark.parametrize("key", [1, None, True, 2.5])
def test_non_string_keyword_names_rejected(key: Any) -> None:
    # json.dumps would silently turn these keys into strings ("1", "null", ...).
    with pytest.raises(TypeError, match="keyword argument names must be strings"):
        encode_arguments("t", [], {key: "value"})


# --- check_name -----------------------------------------------------------------------------


def test_check_name_returns_valid_name() -> None:
    assert check_name("queue", "emails") == "emails"
    assert check_name("task", "x" * MAX_NAME_LENGTH) == "x" * MAX_NAME_LENGTH


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "queue name must be a non-empty string"),
        ("   ", "queue name must be a non-empty string"),
        (None, "queue name must be a non-empty string"),
        (42, "queue name must be a non-empty string"),
        ("x" * (MAX_NAME_LENGTH + 1), f"longer than {MAX_NAME_LENGTH} characters"),
        ("a\x00b", "must not contain NUL"),
    ],
)
def test_check_name_rejects(name: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_name("queue", name)


# --- EnqueueOptions -------------------------------------------------------------------------


def test_options_defaults_are_empty() -> None:
    opts = EnqueueOptions()
    assert (opts.queue, opts.priority, opts.delay, opts.run_at) == (None, None, None, None)
    assert (opts.dedup_key, opts.max_attempts) == (None, None)


def test_options_accept_valid_values() -> None:
    opts = EnqueueOptions(
        queue="bulk", priority=-3, delay=timedelta(minutes=5), dedup_key="k", max_attempts=1
    )
    assert opts.priority == -3
    assert opts.delay == timedelta(minutes=5)


def test_delay_and_run_at_together_rejected() -> None:
    with pytest.raises(ValueError, match="either delay or run_at, not both"):
        EnqueueOptions(delay=timedelta(seconds=1), run_at=NOW)


def test_naive_run_at_rejected() -> None:
    with pytest.raises(ValueError, match="run_at must be timezone-aware"):
        EnqueueOptions(run_at=datetime(2026, 1, 1, 9, 0))


def test_run_at_must_be_datetime() -> None:
    with pytest.raises(TypeError, match="run_at must be a datetime"):
        EnqueueOptions(run_at="2026-01-01T00:00:00Z")  # type: ignore[arg-type]


def test_delay_must_be_timedelta() -> None:
    with pytest.raises(TypeError, match="delay must be a timedelta"):
        EnqueueOptions(delay=30)  # type: ignore[arg-type]


@pytest.mark.parametrize("priority", ["10", 1.5, True, [1]])
def test_bad_priority_rejected(priority: Any) -> None:
    with pytest.raises(TypeError, match="priority must be an int"):
        EnqueueOptions(priority=priority)


@pytest.mark.parametrize("max_attempts", [0, -1, 1.5, "3", False])
def test_bad_max_attempts_rejected(max_attempts: Any) -> None:
    with pytest.raises(ValueError, match="max_attempts must be an int >= 1"):
        EnqueueOptions(max_attempts=max_attempts)


@pytest.mark.parametrize("dedup_key", ["", 5, b"key"])
def test_bad_dedup_key_rejected(dedup_key: Any) -> None:
    with pytest.raises(ValueError, match="dedup_key must be a non-empty string"):
        EnqueueOptions(dedup_key=dedup_key)


def test_bad_queue_rejected() -> None:
    with pytest.raises(ValueError, match="queue name"):
        EnqueueOptions(queue="")


# --- enqueue_params -------------------------------------------------------------------------


def _params(options: EnqueueOptions) -> dict[str, Any]:
    return enqueue_params(
        "mail.send",
        ["a@b.c"],
        {"subject": "hi"},
        queue="mail",
        priority=5,
        max_attempts=3,
        options=options,
    )


def test_enqueue_params_use_task_defaults() -> None:
    assert _params(EnqueueOptions()) == {
        "task": "mail.send",
        "args": '["a@b.c"]',
        "kwargs": '{"subject":"hi"}',
        "queue": "mail",
        "priority": 5,
        "run_at": None,
        "delay": timedelta(0),
        "dedup_key": None,
        "max_attempts": 3,
    }


def test_enqueue_params_options_override_defaults() -> None:
    opts = EnqueueOptions(
        queue="bulk", priority=0, delay=timedelta(minutes=5), dedup_key="w:42", max_attempts=9
    )
    params = _params(opts)
    assert params["queue"] == "bulk"
    assert params["priority"] == 0  # an explicit 0 wins over the task's 5
    assert params["delay"] == timedelta(minutes=5)
    assert params["run_at"] is None
    assert params["dedup_key"] == "w:42"
    assert params["max_attempts"] == 9


def test_enqueue_params_run_at() -> None:
    params = _params(EnqueueOptions(run_at=NOW))
    assert params["run_at"] == NOW
    assert params["delay"] == timedelta(0)


def test_enqueue_params_rejects_bad_task_name() -> None:
    with pytest.raises(ValueError, match="task name"):
        enqueue_params(
            "", [], {}, queue="q", priority=0, max_attempts=None, options=EnqueueOptions()
        )


def test_enqueue_params_rejects_non_json() -> None:
    with pytest.raises(TypeError, match=r"task 'mail\.send': argument 'body'"):
        enqueue_params(
            "mail.send",
            [],
            {"body": object()},
            queue="q",
            priority=0,
            max_attempts=None,
            options=EnqueueOptions(),
        )


# --- encode_many / many_params ----------------------------------------------------------------


def test_encode_many() -> None:
    assert encode_many("t", [{"a": 1}, {}, {"b": [True]}]) == ['{"a":1}', "{}", '{"b":[true]}']
    assert encode_many("t", []) == []


@pytest.mark.parametrize(("item", "type_name"), [("x", "str"), ([1], "list"), (None, "NoneType")])
def test_encode_many_item_not_a_dict(item: object, type_name: str) -> None:
    with pytest.raises(TypeError, match=rf"task 't': enqueue_many takes .* got {type_name}"):
        encode_many("t", [{"ok": 1}, item])


def test_encode_many_non_json_value() -> None:
    with pytest.raises(TypeError, match="task 't': argument 'when'"):
        encode_many("t", [{"when": 1}, {"when": datetime.now(UTC)}])


def _many(options: EnqueueOptions) -> dict[str, Any]:
    return many_params("t", queue="default", priority=1, max_attempts=4, options=options)


def test_many_params_defaults_run_now_on_the_database_clock() -> None:
    assert _many(EnqueueOptions()) == {
        "task": "t",
        "queue": "default",
        "priority": 1,
        "run_at": None,
        "delay": timedelta(0),
        "max_attempts": 4,
    }


def test_many_params_apply_options_and_delay() -> None:
    opts = EnqueueOptions(queue="bulk", priority=0, delay=timedelta(minutes=5), max_attempts=2)
    params = _many(opts)
    assert params["queue"] == "bulk"
    assert params["priority"] == 0
    assert params["delay"] == timedelta(minutes=5)
    assert params["max_attempts"] == 2


def test_many_params_run_at() -> None:
    when = NOW + timedelta(days=1)
    assert _many(EnqueueOptions(run_at=when))["run_at"] == when


def test_many_params_rejects_dedup_key() -> None:
    with pytest.raises(ValueError, match="does not take a dedup_key"):
        _many(EnqueueOptions(dedup_key="k"))


# --- job_from_row ---------------------------------------------------------------------------


def test_job_from_row() -> None:
    later = NOW + timedelta(seconds=3)
    row = (7, "t", "q", [1], {"a": 2}, 5, 1, 3, NOW, NOW, later, "k", "extra column")
    job = job_from_row(row, worker_id=99)
    assert job == Job(7, "t", "q", [1], {"a": 2}, 5, 1, 3, NOW, NOW, later, "k")
    assert job.worker_id == 99
    assert job.started_at == later
    assert job.dedup_key == "k"


# --- rows a claim returns that Python cannot use ---------------------------------------------


def _claimed(args: object, kwargs: object) -> tuple[object, ...]:
    when = datetime(2026, 1, 1, tzinfo=UTC)
    return (1, "t", "q", args, kwargs, 0, 1, None, when, when, when, None)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("[" * 5000 + "]" * 5000, "RecursionError"),
        ('{"n": ' + "9" * 5000 + "}", "ValueError"),
    ],
    ids=["nested-5000-deep", "integer-of-5000-digits"],
)
def test_the_claim_loader_turns_undecodable_json_into_a_broken_job(raw: str, expected: str) -> None:
    from pgjobs.db import _load_json

    value = _load_json(raw.encode())
    assert isinstance(value, Undecodable)
    assert value.reason.startswith(expected)
    job = job_from_row(_claimed([], value), worker_id=7)
    assert (job.args, job.kwargs) == ([], {})
    assert job.broken is not None
    assert job.broken.startswith(f"the job's kwargs cannot be decoded: {expected}")


def test_arguments_of_the_wrong_json_type_make_a_broken_job() -> None:
    job = job_from_row(_claimed({"a": 1}, [1]), worker_id=7)
    assert job.broken == "the job's args is not a JSON array (got dict)"
    assert (job.args, job.kwargs) == ([], {})
    assert job_from_row(_claimed([1], {"a": 1}), worker_id=7).broken is None
