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

MAX_NAME_LENGTH = 200
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


CLAIM_COLUMNS = 12


def job_from_row(row: Sequence[Any], worker_id: int) -> Job:
    """Map a claim_jobs row (args and kwargs arrive already decoded from jsonb)."""
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
    )


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
        if self.priority is not None and not _is_int(self.priority):
            raise TypeError(f"priority must be an int, got {self.priority!r}")
        if self.delay is not None and self.run_at is not None:
            raise ValueError("give either delay or run_at, not both")
        if self.delay is not None and not isinstance(self.delay, timedelta):
            raise TypeError(f"delay must be a timedelta, got {self.delay!r}")
        if self.run_at is not None:
            if not isinstance(self.run_at, datetime):
                raise TypeError(f"run_at must be a datetime, got {self.run_at!r}")
            if self.run_at.tzinfo is None:
                raise ValueError("run_at must be timezone-aware (e.g. datetime.now(UTC))")
        if self.dedup_key is not None and (
            not isinstance(self.dedup_key, str) or not self.dedup_key
        ):
            raise ValueError(f"dedup_key must be a non-empty string, got {self.dedup_key!r}")
        if self.max_attempts is not None and (
            not _is_int(self.max_attempts) or self.max_attempts < 1
        ):
            raise ValueError(f"max_attempts must be an int >= 1, got {self.max_attempts!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_name(kind: str, name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{kind} name must be a non-empty string, got {name!r}")
    if len(name) > MAX_NAME_LENGTH:
        raise ValueError(
            f"{kind} name is longer than {MAX_NAME_LENGTH} characters: {name[:40]!r}..."
        )
    if "\x00" in name:
        raise ValueError(f"{kind} name must not contain NUL characters: {name!r}")
    return name


def _reject_non_json(value: object) -> Any:
    raise TypeError(f"object of type {type(value).__name__} is not JSON serializable")


# One encoder instance: json.dumps() with options builds a new encoder on every call.
_encode = json.JSONEncoder(
    default=_reject_non_json, allow_nan=False, separators=(",", ":"), ensure_ascii=False
).encode
# An escaped NUL: \u0000 after an even number of backslashes (else it is a literal "\\u0000").
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def _dumps(value: Any) -> str:
    text = _encode(value)
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
            raise TypeError(f"task {task!r}: keyword argument names must be strings, got {key!r}")
    try:
        encoded = _dumps(list(args)), _dumps(dict(kwargs))
    except (TypeError, ValueError):
        for index, value in enumerate(args):
            _check_one(task, f"positional argument {index}", value)
        for key, value in kwargs.items():
            _check_one(task, f"argument {key!r}", value)
        raise TypeError(f"task {task!r}: arguments are not JSON serializable") from None
    if (len(encoded[0]) + len(encoded[1])) * 4 > MAX_ARGUMENTS_BYTES:  # UTF-8: <= 4 bytes/char
        check_size(task, *encoded)
    return encoded


def check_size(task: str, *texts: str) -> None:
    """Raise ValueError if the JSON `texts` of one job exceed MAX_ARGUMENTS_BYTES."""
    size = sum(len(text) if text.isascii() else len(text.encode()) for text in texts)
    if size > MAX_ARGUMENTS_BYTES:
        raise ValueError(
            f"task {task!r}: the arguments are {size:,} bytes of JSON, over the limit of "
            f"{MAX_ARGUMENTS_BYTES:,} (pgjobs.job.MAX_ARGUMENTS_BYTES): store big data "
            "elsewhere and pass a reference to it"
        )


def _check_one(task: str, label: str, value: Any) -> None:
    try:
        _dumps(value)
    except (TypeError, ValueError) as exc:
        reason = str(exc)
        if isinstance(value, float) and not math.isfinite(value):
            reason = f"{value!r} is not valid JSON"
        raise TypeError(f"task {task!r}: {label} is not JSON serializable: {reason}") from None


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
            raise TypeError(
                f"task {task!r}: enqueue_many takes a list of keyword-argument dicts, got "
                f"{type(item).__name__}"
            )
        try:
            text = _dumps(item)
        except (TypeError, ValueError):  # or a Mapping that is not a dict: the slow path
            text = encode_arguments(task, (), item)[1]
        if len(text) * 4 > MAX_ARGUMENTS_BYTES:
            check_size(task, text)
        encoded.append(text)
    return encoded


def copy_rows(
    task: str,
    encoded_kwargs: Sequence[str],
    ids: Sequence[int],
    *,
    queue: str,
    priority: int,
    max_attempts: int | None,
    options: EnqueueOptions,
    now: datetime,
) -> list[tuple[Any, ...]]:
    """Rows for COPY into jobs; `now` is the database's clock."""
    if options.dedup_key is not None:
        raise ValueError("enqueue_many does not take a dedup_key: enqueue those jobs one by one")
    run_at = options.run_at or (now + options.delay if options.delay else now)
    queue = options.queue or queue
    priority = options.priority if options.priority is not None else priority
    max_attempts = options.max_attempts or max_attempts
    return [
        (job_id, task, queue, "[]", kwargs, priority, run_at, max_attempts)
        for job_id, kwargs in zip(ids, encoded_kwargs, strict=True)
    ]
