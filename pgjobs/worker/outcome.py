"""What running a job came to, as the acker writes it back."""

from __future__ import annotations

import json
import traceback
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

from pgjobs.job import Job

MAX_TRACEBACK = 16_000


class Kind(Enum):
    SUCCEEDED = "succeeded"
    RETRY = "retry"  # back to queued after `delay`
    DEAD = "dead"
    RELEASED = "released"  # handed back at shutdown


@dataclass(frozen=True)
class Outcome:
    job: Job
    kind: Kind
    delay: float = 0.0
    error: str | None = None  # one JSON object, appended to the job's errors


def error_record(
    job: Job, kind: str, message: str, now: datetime, exc: BaseException | None = None
) -> str:
    record: dict[str, Any] = {
        "attempt": job.attempt,
        "at": now.isoformat(),
        "kind": kind,
        "error": _jsonb_text(message),
        "worker_id": job.worker_id,
    }
    if exc is not None:
        text = "".join(traceback.format_exception(exc))
        if len(text) > MAX_TRACEBACK:
            text = "...(truncated)\n" + text[-MAX_TRACEBACK:]
        record["traceback"] = _jsonb_text(text)
    return json.dumps(record, default=str)


def _jsonb_text(text: str) -> str:
    """jsonb rejects U+0000: write it as the visible escape `\\x00` instead."""
    return text.replace("\x00", "\\x00")


def describe_exception(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:  # a handler's exception whose __str__ fails must still be recorded
        text = "<str() of the exception failed>"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
