"""The pure layer between the public API and the database: no I/O here.

It validates and encodes what callers enqueue into query parameters, and maps claimed
rows to `Job`. The sync and async I/O paths both go through these functions.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pgjobs.errors import InvalidInput
from pgjobs.limits import (
    MAX_JSON_DEPTH,
    MAX_NAME_LENGTH,
    check_dedup_key,
    check_max_attempts,
    check_name,
    check_priority,
    may_break_limits,
    structure_problem,
)

__all__ = ["MAX_NAME_LENGTH", "check_name"]  # re-exported: callers import them from here
DEFAULT_QUEUE = "default"
# The largest JSON encoding of one job's arguments (args and kwargs together) that enqueue
# accepts, in bytes. Postgres' own ceiling is 256 MiB per jsonb value, but every claim loads
# whole rows into a worker: keep big data elsewhere and pass a reference. Assign
# `pgjobs.job.MAX_ARGUMENTS_BYTES` to change it.
MAX_ARGUMENTS_BYTES = 10 * 1024 * 1024


@dataclass(frozen=True)
class Job:
    """A claimed job, as the worker and `pgjobs.current_job()` see it."""

    id: int
    task: str
    queue: str
    args: list[Any]
    kwargs: dict[str, Any]
    priority: int
    attempt: int
    max_attempts: int | None
    enqueued_at: datetime
    run_at: datetime
    started_at: datetime
    dedup_key: str | None
    worker_id: int = field(default=0, compare=False)
    # Why the row's arguments cannot be used (the job then fails like a raising handler).
    broken: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Undecodable:
    """What the claim's JSON loader returns for a value Python cannot decode."""

    reason: str


CLAIM_COLUMNS = 12


def job_from_row(row: Sequence[Any], worker_id: int) -> Job:
    """Map a claim_jobs row (args and kwargs arrive already decoded from jsonb, or as
    Undecodable). Never raises on what a row holds: a bad row makes a broken Job."""
    (
        job_id,
        task,
        queue,
        args,
        kwargs,
        priority,
        attempt,
        max_attempts,
        enqueued_at,
        run_at,
        started_at,
        dedup_key,
    ) = row[:CLAIM_COLUMNS]
    broken = None
    if not isinstance(args, list):
        broken = _broken("args", args, "a JSON array")
        args = []
    if not isinstance(kwargs, dict):
        broken = broken or _broken("kwargs", kwargs, "a JSON object")
        kwargs = {}
    return Job(
        job_id,
        task,
        queue,
        args,
        kwargs,
        priority,
        attempt,
        max_attempts,
        enqueued_at,
        run_at,
        started_at,
        dedup_key,
        worker_id,
        broken,
    )


def _broken(column: str, value: Any, expected: str) -> str:
    if isinstance(value, Undecodable):
        return f"the job's {column} cannot be decoded: {value.reason}"
    return f"the job's {column} is not {expected} (got {type(value).__name__})"


@dataclass(frozen=True)
class EnqueueOptions:
    """Per-call overrides of a task's defaults."""

    queue: str | None = None
    priority: int | None = None
    delay: timedelta | None = None
    run_at: datetime | None = None
    dedup_key: str | None = None
    max_attempts: int | None = None

    def __post_init__(self) -> None:
        if self.queue is not None:
            check_name("queue", self.queue)
        if self.priority is not None:
            check_priority(self.priority)
        if self.delay is not None and self.run_at is not None:
            raise InvalidInput("give either delay or run_at, not both")
        if self.delay is not None and not isinstance(self.delay, timedelta):
            raise InvalidInput(f"delay must be a timedelta, got {self.delay!r}")
        if self.run_at is not None:
            if not isinstance(self.run_at, datetime):
                raise InvalidInput(f"run_at must be a datetime, got {self.run_at!r}")
            if self.run_at.tzinfo is None:
                raise InvalidInput("run_at must be timezone-aware (e.g. datetime.now(UTC))")
        if self.dedup_key is not None:
            check_dedup_key(self.dedup_key)
        if self.max_attempts is not None:
            check_max_attempts(self.max_attempts)


def _reject_non_json(value: object) -> Any:
    raise TypeError(f"object of type {type(value).__name__} is not JSON serializable")


# One encoder instance: json.dumps() with options builds a new encoder on every call.
_encode = json.JSONEncoder(
    default=_reject_non_json, allow_nan=False, separators=(",", ":"), ensure_ascii=False
).encode
# An escaped NUL: \u0000 after an even number of backslashes (else it is a literal "\\u0000").
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


class _TooDeep(ValueError):
    """The encoder ran out of recursion: the value nests far too deep."""


def _dumps(value: Any) -> str:
    try:
        text = _encode(value)
    except RecursionError:
        raise _TooDeep(f"nests deeper than {MAX_JSON_DEPTH} levels of arrays/objects") from None
    # Valid JSON that Postgres cannot take: refuse it here, before the caller's transaction
    # is aborted by the server (NUL in jsonb) or psycopg fails to encode it (lone surrogate).
    if "\\u0000" in text and _NUL_ESCAPE.search(text):
        raise ValueError("Postgres jsonb cannot store the NUL character (\\u0000)")
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            raise ValueError("a string holds a lone surrogate, which is not valid UTF-8") from None
    return text


def encode_arguments(task: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> tuple[str, str]:
    """JSON-encode arguments; a TypeError names the task and the offending argument."""
    for key in kwargs:
        if not isinstance(key, str):
            raise InvalidInput(
                f"task {task!r}: keyword argument names must be strings, got {key!r}"
            )
    try:
        encoded = _dumps(list(args)), _dumps(dict(kwargs))
    except (TypeError, ValueError):
        for index, value in enumerate(args):
            _check_one(task, f"positional argument {index}", value)
        for key, value in kwargs.items():
            _check_one(task, f"argument {key!r}", value)
        raise InvalidInput(f"task {task!r}: arguments are not JSON serializable") from None
    if (len(encoded[0]) + len(encoded[1])) * 4 > MAX_ARGUMENTS_BYTES:  # UTF-8: <= 4 bytes/char
        check_size(task, *encoded)
    if may_break_limits(encoded[0]) or may_break_limits(encoded[1]):
        _check_structure(task, list(enumerate(args)), kwargs)
    return encoded


def _check_structure(
    task: str, positional: Iterable[tuple[int, Any]], keywords: Mapping[str, Any]
) -> None:
    """Raise InvalidInput naming the first argument over the depth or integer limit."""
    labelled = [(f"positional argument {i}", v) for i, v in positional]
    labelled += [(f"argument {k!r}", v) for k, v in keywords.items()]
    for label, value in labelled:
        problem = structure_problem(value)
        if problem:
            raise InvalidInput(f"task {task!r}: {label} {problem}")


def check_size(task: str, *texts: str) -> None:
    """Raise ValueError if the JSON `texts` of one job exceed MAX_ARGUMENTS_BYTES."""
    size = sum(len(text) if text.isascii() else len(text.encode()) for text in texts)
    if size > MAX_ARGUMENTS_BYTES:
        raise InvalidInput(
            f"task {task!r}: the arguments are {size:,} bytes of JSON, over the limit of "
            f"{MAX_ARGUMENTS_BYTES:,} (pgjobs.job.MAX_ARGUMENTS_BYTES): store big data "
            "elsewhere and pass a reference to it"
        )


def _check_one(task: str, label: str, value: Any) -> None:
    try:
        _dumps(value)
    except (TypeError, ValueError) as exc:
        # Too deep for the encoder, or an int over Python's int/str limit: say which limit.
        if isinstance(exc, _TooDeep) or "integer string conversion" in str(exc):
            problem = structure_problem(value)
            if problem:
                raise InvalidInput(f"task {task!r}: {label} {problem}") from None
        reason = str(exc)
        if isinstance(value, float) and not math.isfinite(value):
            reason = f"{value!r} is not valid JSON"
        raise InvalidInput(f"task {task!r}: {label} is not JSON serializable: {reason}") from None


def enqueue_params(
    task: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    *,
    queue: str,
    priority: int,
    max_attempts: int | None,
    options: EnqueueOptions,
) -> dict[str, Any]:
    """Parameters of the `enqueue` query."""
    check_name("task", task)
    args_json, kwargs_json = encode_arguments(task, args, kwargs)
    return {
        "task": task,
        "args": args_json,
        "kwargs": kwargs_json,
        "queue": options.queue or queue,
        "priority": options.priority if options.priority is not None else priority,
        "run_at": options.run_at,
        "delay": options.delay or timedelta(0),
        "dedup_key": options.dedup_key,
        "max_attempts": options.max_attempts or max_attempts,
    }


def encode_many(task: str, items: Iterable[object]) -> list[str]:
    """JSON-encode the kwargs of each item of `enqueue_many`, before any I/O."""
    encoded = []
    for item in items:
        if not isinstance(item, Mapping):
            raise InvalidInput(
                f"task {task!r}: enqueue_many takes a list of keyword-argument dicts, got "
                f"{type(item).__name__}"
            )
        try:
            text = _dumps(item)
        except (TypeError, ValueError):  # or a Mapping that is not a dict: the slow path
            text = encode_arguments(task, (), item)[1]
        if len(text) * 4 > MAX_ARGUMENTS_BYTES:
            check_size(task, text)
        if may_break_limits(text):
            _check_structure(task, (), item)
        encoded.append(text)
    return encoded


def many_params(
    task: str,
    *,
    queue: str,
    priority: int,
    max_attempts: int | None,
    options: EnqueueOptions,
) -> dict[str, Any]:
    """Parameters of the `enqueue_many` query but `kwargs`, which the producer sends in
    batches; the database's clock applies `delay`."""
    if options.dedup_key is not None:
        raise ValueError("enqueue_many does not take a dedup_key: enqueue those jobs one by one")
    return {
        "task": task,
        "queue": options.queue or queue,
        "priority": options.priority if options.priority is not None else priority,
        "run_at": options.run_at,
        "delay": options.delay or timedelta(0),
        "max_attempts": options.max_attempts or max_attempts,
    }
