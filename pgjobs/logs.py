"""Logging: one structured line per job event, text or JSON, never a DSN password.

The worker's built-in job logging is middleware. Every line carries the fields `job_id`,
`task`, `queue`, `attempt`, `outcome` and `duration` both in the message (`key=value`) and
as attributes of the log record, which `JsonFormatter` (or any JSON formatter that reads
record attributes) emits as keys. Retries log at WARNING, dead jobs at ERROR, hand-backs at
shutdown at INFO; starts and successes at DEBUG, and only when the "pgjobs.jobs" logger is
at DEBUG when the worker starts (`pgjobs worker -v`): otherwise a job that succeeds costs
no logging call at all.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from pgjobs.db import redact
from pgjobs.job import Job
from pgjobs.middleware import JobOutcome, JobResult, Middleware

log = logging.getLogger("pgjobs.jobs")

JOB_FIELDS = ("job_id", "task", "queue", "attempt", "outcome", "duration", "retry_in", "error")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def job_logger(logger: logging.Logger = log) -> JobLogger:
    """The job logger for `logger`'s current level: with starts and successes at DEBUG."""
    return VerboseJobLogger(logger) if logger.isEnabledFor(logging.DEBUG) else JobLogger(logger)


class JobLogger(Middleware):
    """Logs retries (WARNING), dead jobs (ERROR) and hand-backs at shutdown (INFO)."""

    def __init__(self, logger: logging.Logger = log):
        self.logger = logger

    def on_retry(self, job: Job, result: JobResult) -> None:
        self._outcome(logging.WARNING, job, result)

    def on_dead(self, job: Job, result: JobResult) -> None:
        self._outcome(logging.ERROR, job, result)

    def on_release(self, job: Job, result: JobResult) -> None:
        self._outcome(logging.INFO, job, result)

    def _outcome(self, level: int, job: Job, result: JobResult) -> None:
        if not self.logger.isEnabledFor(level):
            return
        fields: dict[str, Any] = {"outcome": result.outcome.value, "duration": result.duration}
        if result.retry_in is not None:
            fields["retry_in"] = result.retry_in
        if result.error is not None:
            fields["error"] = result.error
        self._emit(level, f"job {result.outcome.value}", job, fields)

    def _emit(self, level: int, event: str, job: Job, fields: dict[str, Any]) -> None:
        extra: dict[str, Any] = {
            "job_id": job.id,
            "task": job.task,
            "queue": job.queue,
            "attempt": job.attempt,
            **fields,
        }
        self.logger.log(level, "%s %s", event, _logfmt(extra), extra=extra)


class VerboseJobLogger(JobLogger):
    """`JobLogger`, plus each job's start and success at DEBUG."""

    def before_job(self, job: Job) -> None:
        if self.logger.isEnabledFor(logging.DEBUG):
            self._emit(logging.DEBUG, "job started", job, {})

    def after_job(self, job: Job, result: JobResult) -> None:
        if result.outcome is JobOutcome.SUCCEEDED:
            self._outcome(logging.DEBUG, job, result)


def _logfmt(fields: dict[str, Any]) -> str:
    parts = []
    for key, value in fields.items():
        if isinstance(value, float):
            text = f"{value:.6f}".rstrip("0").rstrip(".") + "s"
        else:
            text = str(value)
            if not text or any(c in text for c in ' "=') or not text.isprintable():
                text = escape_unprintable(json.dumps(text, ensure_ascii=False))
        parts.append(f"{key}={text}")
    return " ".join(parts)


def escape_unprintable(text: str) -> str:
    """`text` with every unprintable character (controls, ESC, bidi overrides such as
    U+202E, line separators, lone surrogates) as a JSON escape: task names, queues and
    errors come from rows anyone could have written, and must not forge or garble lines."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else json.dumps(c)[1:-1] for c in text)


class TextFormatter(logging.Formatter):
    """The usual one-line text format, with passwords in DSNs replaced by ***."""

    def __init__(self, fmt: str = TEXT_FORMAT):
        super().__init__(fmt)

    def formatMessage(self, record: logging.LogRecord) -> str:
        # The message line only: a traceback appended after it keeps its newlines.
        return escape_unprintable(super().formatMessage(record))

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, job fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for key in JOB_FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                data[key] = redact(value) if isinstance(value, str) else value
        if record.exc_info:
            data["exception"] = redact(self.formatException(record.exc_info))
        return escape_unprintable(json.dumps(data, ensure_ascii=False, default=str))


def formatter(fmt: str) -> logging.Formatter:
    if fmt == "json":
        return JsonFormatter()
    if fmt == "text":
        return TextFormatter()
    raise ValueError(f"log format must be 'text' or 'json', got {fmt!r}")


def configure(level: int, fmt: str = "text") -> None:
    """Log to stderr at `level` in `fmt` ("text" or "json"), replacing root handlers."""
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(fmt))
    logging.basicConfig(level=level, handlers=[handler], force=True)


def use_format(fmt: str) -> None:
    """Give every root handler the `fmt` formatter (keeps handlers and levels)."""
    root = logging.getLogger()
    if not root.handlers:
        configure(root.level if root.level != logging.NOTSET else logging.INFO, fmt)
        return
    for handler in root.handlers:
        handler.setFormatter(formatter(fmt))
