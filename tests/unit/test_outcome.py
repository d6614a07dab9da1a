"""Outcome records and the exceptions handlers raise to steer retries."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import pytest

from pgjobs import Discard, PgJobsError, Retry
from pgjobs import errors as errors_module
from pgjobs.job import Job
from pgjobs.worker.outcome import MAX_TRACEBACK, describe_exception, error_record

NOW = datetime(2026, 2, 3, 4, 5, 6, tzinfo=UTC)
JOB = Job(5, "t", "default", [], {}, 0, 2, 3, NOW, NOW, NOW, None, worker_id=17)


def _raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


def test_error_record_fields() -> None:
    record = json.loads(error_record(JOB, "exception", "ValueError: boom", NOW))
    assert record == {
        "attempt": 2,
        "at": NOW.isoformat(),
        "kind": "exception",
        "error": "ValueError: boom",
        "worker_id": 17,
    }


def test_error_record_traceback() -> None:
    exc = _raised(ValueError("boom"))
    record = json.loads(error_record(JOB, "exception", "ValueError: boom", NOW, exc))
    assert record["traceback"].startswith("Traceback (most recent call last)")
    assert "ValueError: boom" in record["traceback"]
    assert "_raised" in record["traceback"]


def test_error_record_truncates_huge_tracebacks() -> None:
    exc = _raised(RuntimeError("x" * (MAX_TRACEBACK * 2) + "END"))
    traceback = json.loads(error_record(JOB, "exception", "huge", NOW, exc))["traceback"]
    assert traceback.startswith("...(truncated)\n")
    assert len(traceback) == len("...(truncated)\n") + MAX_TRACEBACK
    assert traceback.rstrip().endswith("END")  # the end, where the error is, survives


def test_describe_exception() -> None:
    assert describe_exception(ValueError("bad value")) == "ValueError: bad value"
    assert describe_exception(KeyError("k")) == "KeyError: 'k'"
    assert describe_exception(RuntimeError()) == "RuntimeError"


def test_retry() -> None:
    assert Retry().delay is None
    assert str(Retry()) == "retry requested"
    retry = Retry(delay=timedelta(seconds=30), reason="rate limited")
    assert retry.delay == 30.0
    assert retry.reason == "rate limited"
    assert str(retry) == "rate limited (in 30s)"
    assert Retry(delay=0.5).delay == 0.5


@pytest.mark.parametrize("delay", [-1, timedelta(seconds=-1)])
def test_retry_rejects_negative_delay(delay: float | timedelta) -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        Retry(delay=delay)


@pytest.mark.parametrize("delay", [math.nan, math.inf])
def test_retry_rejects_non_finite_delay(delay: float) -> None:
    # The acker turns the delay into make_interval(secs => delay): NaN/inf fail the ack batch.
    with pytest.raises(ValueError, match="Retry delay"):
        Retry(delay=delay)


def test_discard() -> None:
    assert Discard().reason == "discarded"
    assert Discard("bad input").reason == "bad input"
    assert str(Discard("bad input")) == "bad input"


def test_error_hierarchy() -> None:
    for name in ("ConfigError", "DatabaseError", "SchemaError", "JobNotFound", "UnknownTask"):
        assert issubclass(getattr(errors_module, name), PgJobsError), name
    assert issubclass(errors_module.JobTimeout, PgJobsError)
    # Retry and Discard steer the worker; they are not errors of pgjobs itself.
    assert not issubclass(Retry, PgJobsError)
    assert not issubclass(Discard, PgJobsError)
