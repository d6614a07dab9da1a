"""pgjobs.logs: the built-in job logger (one structured line per job event) and formatters."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

import pytest

from pgjobs import Job, JobOutcome, JobResult
from pgjobs.logs import (
    JobLogger,
    JsonFormatter,
    TextFormatter,
    VerboseJobLogger,
    formatter,
    job_logger,
)
from pgjobs.middleware import HookChain

START = datetime(2026, 4, 1, 12, 0, tzinfo=UTC)
SECRET_DSN = "postgresql://app:s3cret-pw@db.internal:5432/app"


def make_job() -> Job:
    return Job(12, "emails.send", "email", [], {}, 0, 2, 5, START, START, START, None, 7)


def records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "pgjobs.jobs"]


def test_each_outcome_is_one_line_with_the_job_fields(caplog: pytest.LogCaptureFixture) -> None:
    chain = HookChain([VerboseJobLogger()])
    with caplog.at_level(logging.DEBUG, logger="pgjobs.jobs"):
        chain.before_job(make_job())
        chain.after_job(make_job(), JobResult(JobOutcome.SUCCEEDED, 0.0125))
        chain.after_job(make_job(), JobResult(JobOutcome.RETRIED, 1.5, "ValueError: x", None, 4))
        chain.after_job(make_job(), JobResult(JobOutcome.DEAD, 2.0, "RuntimeError: gone"))
        chain.after_job(make_job(), JobResult(JobOutcome.RELEASED, 3.0))

    found = records(caplog)
    assert [r.levelno for r in found] == [
        logging.DEBUG,
        logging.DEBUG,
        logging.WARNING,
        logging.ERROR,
        logging.INFO,
    ]
    assert [r.getMessage().split(" job_id=")[0] for r in found] == [
        "job started",
        "job succeeded",
        "job retried",
        "job dead",
        "job released",
    ]
    succeeded = found[1]
    assert succeeded.getMessage() == (
        "job succeeded job_id=12 task=emails.send queue=email attempt=2 outcome=succeeded "
        "duration=0.0125s"
    )
    for record in found:  # the same fields as record attributes, for JSON formatters
        fields = (record.job_id, record.task, record.queue, record.attempt)  # type: ignore[attr-defined]
        assert fields == (12, "emails.send", "email", 2)
    assert found[2].retry_in == 4  # type: ignore[attr-defined]
    assert 'error="ValueError: x"' in found[2].getMessage()
    assert found[3].error == "RuntimeError: gone"  # type: ignore[attr-defined]


def test_the_level_at_start_decides_whether_successes_are_logged() -> None:
    logger = logging.getLogger("pgjobs.test.levels")
    logger.setLevel(logging.INFO)
    quiet = job_logger(logger)
    assert type(quiet) is JobLogger
    # Only failure hooks: a worker then spends nothing on a job that succeeds.
    assert not HookChain([quiet]).every_job
    logger.setLevel(logging.DEBUG)
    verbose = job_logger(logger)
    assert isinstance(verbose, VerboseJobLogger)
    assert HookChain([verbose]).every_job


def test_failures_are_logged_without_debug(caplog: pytest.LogCaptureFixture) -> None:
    chain = HookChain([JobLogger()])
    with caplog.at_level(logging.INFO, logger="pgjobs.jobs"):
        chain.before_job(make_job())
        chain.after_job(make_job(), JobResult(JobOutcome.SUCCEEDED, 0.1))
        chain.after_job(make_job(), JobResult(JobOutcome.DEAD, 0.1, "boom"))
    assert [r.getMessage().split(" job_id=")[0] for r in records(caplog)] == ["job dead"]


def _record(message: str, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("pgjobs.jobs", logging.WARNING, __file__, 1, message, (), None)
    for name, value in extra.items():
        setattr(record, name, value)
    return record


def test_json_lines_carry_the_job_fields_and_hide_passwords() -> None:
    record = _record(
        f"job retried job_id=3 error=cannot reach {SECRET_DSN}",
        job_id=3,
        task="t",
        queue="q",
        attempt=1,
        duration=0.5,
        error=f"cannot reach {SECRET_DSN}",
    )
    line = JsonFormatter().format(record)
    assert "\n" not in line
    data = json.loads(line)
    assert data["level"] == "WARNING"
    assert data["logger"] == "pgjobs.jobs"
    assert (data["job_id"], data["task"], data["queue"], data["attempt"]) == (3, "t", "q", 1)
    assert data["duration"] == 0.5
    assert "s3cret-pw" not in line
    assert "postgresql://app:***@db.internal:5432/app" in data["error"]
    datetime.fromisoformat(data["time"])


def test_text_lines_hide_passwords_in_messages_and_tracebacks() -> None:
    try:
        raise ConnectionError(f"password=s3cret-pw host=db {SECRET_DSN}")
    except ConnectionError:
        record = _record(f"lost {SECRET_DSN}")
        record.exc_info = sys.exc_info()
    text = TextFormatter().format(record)
    assert "s3cret-pw" not in text
    assert "password=***" in text
    assert "ConnectionError" in text


def test_formats_are_checked() -> None:
    assert isinstance(formatter("json"), JsonFormatter)
    assert isinstance(formatter("text"), TextFormatter)
    with pytest.raises(ValueError, match="'text' or 'json'"):
        formatter("xml")
