"""Handler failures through a real worker: retries, backoff, Retry, Discard, timeouts, bad input."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from worker_harness import running_worker, until

import pgjobs
from pgjobs.worker import WorkerConfig

TINY = pgjobs.Backoff(initial=0.05, factor=1, jitter=0)


def _finished(db: psycopg.Connection[Any], job_id: int) -> tuple[str, int, list[Any]]:
    row = db.execute(
        "SELECT state, attempt, errors FROM pgjobs.job_history WHERE id = %s", (job_id,)
    ).fetchone()
    assert row is not None, f"job {job_id} is not in job_history"
    return row[0], row[1], row[2]


def _queued(db: psycopg.Connection[Any], job_id: int) -> tuple[Any, ...]:
    row = db.execute(
        "SELECT state, attempt, worker_id, extract(epoch FROM run_at - now())::float8, errors"
        " FROM pgjobs.jobs WHERE id = %s",
        (job_id,),
    ).fetchone()
    assert row is not None, f"job {job_id} is not in jobs"
    return tuple(row)


def _run_until_finished(app: pgjobs.App, job_ids: list[int], limit: float = 20.0) -> None:
    """Run a (non-burst) worker until every job is in job_history; fail after `limit` s."""

    async def finished(conn: psycopg.AsyncConnection[Any]) -> bool:
        cur = await conn.execute(
            "SELECT count(*) FROM pgjobs.job_history WHERE id = ANY(%s)", (job_ids,)
        )
        row = await cur.fetchone()
        return row is not None and row[0] == len(job_ids)

    async def main() -> None:
        config = WorkerConfig(concurrency=4, poll_interval=0.05)
        async with (
            running_worker(app, config),
            await psycopg.AsyncConnection.connect(app.database.dsn, autocommit=True) as conn,
        ):
            await until(lambda: finished(conn), f"jobs {job_ids} to finish", limit)

    asyncio.run(main())


@pytest.mark.timeout(60)
def test_exception_retries_with_backoff_until_dead(
    app: pgjobs.App, db: psycopg.Connection[Any]
) -> None:
    attempts: list[int] = []

    @app.task(name="fail.always", max_attempts=3, retry=TINY)
    def explode(label: str) -> None:
        attempt = pgjobs.current_job().attempt
        attempts.append(attempt)
        raise ValueError(f"boom {label} on attempt {attempt}")

    job_id = explode.enqueue("xyz")
    _run_until_finished(app, [job_id])

    assert attempts == [1, 2, 3]
    state, attempt, errors = _finished(db, job_id)
    assert (state, attempt) == ("dead", 3)
    assert [e["attempt"] for e in errors] == [1, 2, 3]
    assert {e["kind"] for e in errors} == {"exception"}
    assert [e["error"] for e in errors] == [
        f"ValueError: boom xyz on attempt {n}" for n in (1, 2, 3)
    ]
    last = errors[-1]
    assert "Traceback (most recent call last)" in last["traceback"]
    assert "in explode" in last["traceback"]
    assert "ValueError: boom xyz on attempt 3" in last["traceback"]
    assert db.execute("SELECT count(*) FROM pgjobs.jobs").fetchone() == (0,)


def test_failure_is_requeued_after_the_task_backoff(
    app: pgjobs.App, db: psycopg.Connection[Any]
) -> None:
    @app.task(name="fail.slow_backoff", max_attempts=4, retry=pgjobs.Backoff(initial=40, jitter=0))
    def explode() -> None:
        raise RuntimeError("nope")

    job_id = explode.enqueue()
    app.run_worker(burst=True, install_signal_handlers=False)  # exits: retry is in the future

    state, attempt, worker_id, due_in, errors = _queued(db, job_id)
    assert (state, attempt, worker_id) == ("queued", 1, None)
    assert 35 < due_in <= 40
    assert [(e["attempt"], e["kind"], e["error"]) for e in errors] == [
        (1, "exception", "RuntimeError: nope")
    ]


def test_retry_with_delay_sets_run_at(app: pgjobs.App, db: psycopg.Connection[Any]) -> None:
    runs: list[int] = []

    @app.task(name="fail.retry_later")
    async def later() -> None:
        runs.append(pgjobs.current_job().attempt)
        raise pgjobs.Retry(delay=timedelta(seconds=90), reason="upstream busy")

    job_id = later.enqueue()
    app.run_worker(burst=True, install_signal_handlers=False)

    assert runs == [1]
    state, attempt, worker_id, due_in, errors = _queued(db, job_id)
    assert (state, attempt, worker_id) == ("queued", 1, None)
    assert 85 < due_in <= 90
    assert len(errors) == 1
    assert errors[0]["kind"] == "retry"
    assert "upstream busy" in errors[0]["error"]


def test_retry_on_last_attempt_goes_dead(app: pgjobs.App, db: psycopg.Connection[Any]) -> None:
    @app.task(name="fail.retry_exhausted", max_attempts=1)
    def again() -> None:
        raise pgjobs.Retry(delay=0, reason="please again")

    job_id = again.enqueue()
    app.run_worker(burst=True, install_signal_handlers=False)

    state, attempt, errors = _finished(db, job_id)
    assert (state, attempt) == ("dead", 1)
    assert errors[-1]["kind"] == "retry"
    assert "all 1 attempts are used" in errors[-1]["error"]


def test_discard_goes_dead_at_once_with_reason(
    app: pgjobs.App, db: psycopg.Connection[Any]
) -> None:
    runs: list[int] = []

    @app.task(name="fail.discard", max_attempts=5)
    def give_up() -> None:
        runs.append(1)
        raise pgjobs.Discard("customer deleted")

    job_id = give_up.enqueue()
    app.run_worker(burst=True, install_signal_handlers=False)

    assert runs == [1]
    state, attempt, errors = _finished(db, job_id)
    assert (state, attempt) == ("dead", 1)
    assert len(errors) == 1
    assert errors[0]["kind"] == "discard"
    assert "customer deleted" in errors[0]["error"]


def test_unknown_task_goes_dead_and_worker_keeps_going(
    app: pgjobs.App, db: psycopg.Connection[Any]
) -> None:
    ran: list[int] = []

    @app.task(name="fail.known")
    def known(n: int) -> None:
        ran.append(n)

    first = known.enqueue(1)
    unknown = app.enqueue("nope.missing", args=[1], kwargs={"x": "y"}, max_attempts=1)
    last = known.enqueue(2)

    app.run_worker(concurrency=1, burst=True, install_signal_handlers=False)

    assert ran == [1, 2]
    state, attempt, errors = _finished(db, unknown)
    assert (state, attempt) == ("dead", 1)
    assert errors[-1]["kind"] == "unknown_task"
    assert "nope.missing" in errors[-1]["error"]
    assert "fail.known" in errors[-1]["error"]  # lists what is registered
    assert _finished(db, first)[0] == "succeeded"
    assert _finished(db, last)[0] == "succeeded"


def test_unknown_task_with_attempts_left_is_retried_later(
    app: pgjobs.App, db: psycopg.Connection[Any]
) -> None:
    job_id = app.enqueue("nope.later", max_attempts=3)
    app.run_worker(burst=True, install_signal_handlers=False)

    state, attempt, worker_id, due_in, errors = _queued(db, job_id)
    assert (state, attempt, worker_id) == ("queued", 1, None)
    assert due_in > 1  # not spun on: another worker version may know the task later
    assert errors[-1]["kind"] == "unknown_task"


def test_arguments_that_do_not_fit_go_dead_as_bad_arguments(
    app: pgjobs.App, db: psycopg.Connection[Any]
) -> None:
    ran: list[Any] = []

    @app.task(name="fail.strict", max_attempts=5)
    def strict(a: int, *, b: str) -> None:
        ran.append((a, b))

    too_many = db.execute(
        "SELECT pgjobs.enqueue(task => 'fail.strict', args => '[1, 2]', kwargs => '{\"b\": \"x\"}')"
    ).fetchone()[0]  # type: ignore[index]
    unknown_kw = db.execute(
        "SELECT pgjobs.enqueue(task => 'fail.strict', args => '[1]', kwargs => '{\"c\": 1}')"
    ).fetchone()[0]  # type: ignore[index]
    fine = db.execute(
        "SELECT pgjobs.enqueue(task => 'fail.strict', args => '[7]', kwargs => '{\"b\": \"ok\"}')"
    ).fetchone()[0]  # type: ignore[index]

    app.run_worker(burst=True, install_signal_handlers=False)

    assert ran == [(7, "ok")]
    for job_id in (too_many, unknown_kw):
        state, attempt, errors = _finished(db, job_id)
        assert (state, attempt) == ("dead", 1)  # retrying cannot help: no more attempts
        assert len(errors) == 1
        assert errors[0]["kind"] == "bad_arguments"
        assert "arguments do not fit the handler" in errors[0]["error"]
    assert _finished(db, fine)[0] == "succeeded"


@pytest.mark.timeout(60)
def test_async_handler_past_timeout_is_cancelled(
    app: pgjobs.App, db: psycopg.Connection[Any]
) -> None:
    events: list[str] = []

    @app.task(name="fail.async_slow", timeout=0.2, max_attempts=1)
    async def slow() -> None:
        events.append("started")
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            events.append("cancelled")
            raise
        events.append("finished")

    job_id = slow.enqueue()
    app.run_worker(burst=True, install_signal_handlers=False)

    assert events == ["started", "cancelled"]
    state, attempt, errors = _finished(db, job_id)
    assert (state, attempt) == ("dead", 1)
    assert errors[0]["kind"] == "timeout"
    assert "timed out after 0.2s" in errors[0]["error"]


@pytest.mark.timeout(60)
def test_sync_handler_past_timeout_runs_to_the_end_then_fails(
    app: pgjobs.App, db: psycopg.Connection[Any]
) -> None:
    """Python cannot interrupt a thread: the worker waits for the sync handler to return,
    keeping its slot (and the job, still `running` under this worker) meanwhile, then
    discards the result and fails the attempt with a timeout error. Side effects of the
    overrunning handler therefore do happen."""
    events: list[str] = []

    @app.task(name="fail.sync_slow", timeout=0.2, max_attempts=2, retry=TINY)
    def slow() -> str:
        attempt = pgjobs.current_job().attempt
        events.append(f"started {attempt}")
        if attempt == 1:
            time.sleep(0.6)
        events.append(f"finished {attempt}")
        return "result is discarded on the timed-out attempt"

    job_id = slow.enqueue()
    _run_until_finished(app, [job_id])

    assert events == ["started 1", "finished 1", "started 2", "finished 2"]
    state, attempt, errors = _finished(db, job_id)
    assert (state, attempt) == ("succeeded", 2)
    assert len(errors) == 1
    assert errors[0]["kind"] == "timeout"
    assert errors[0]["attempt"] == 1
    assert "timeout is 0.2s" in errors[0]["error"]


def test_zero_delay_retry_is_run_again_before_burst_exits(
    app: pgjobs.App, db: psycopg.Connection[Any]
) -> None:
    attempts: list[tuple[str, int]] = []

    @app.task(name="fail.retry_now")
    def retry_now() -> None:
        attempt = pgjobs.current_job().attempt
        attempts.append(("retry", attempt))
        if attempt == 1:
            raise pgjobs.Retry(delay=0)

    @app.task(name="fail.backoff_zero", retry=pgjobs.Backoff(initial=0, jitter=0))
    async def fail_once() -> None:
        attempt = pgjobs.current_job().attempt
        attempts.append(("backoff", attempt))
        if attempt < 3:
            raise OSError("flaky")

    a = retry_now.enqueue()
    b = fail_once.enqueue()
    app.run_worker(concurrency=1, burst=True, install_signal_handlers=False)

    assert sorted(attempts) == [
        ("backoff", 1),
        ("backoff", 2),
        ("backoff", 3),
        ("retry", 1),
        ("retry", 2),
    ]
    assert _finished(db, a)[:2] == ("succeeded", 2)
    assert _finished(db, b)[:2] == ("succeeded", 3)
    assert db.execute("SELECT count(*) FROM pgjobs.jobs").fetchone() == (0,)


def test_exception_message_with_nul_byte_is_recorded(
    app: pgjobs.App, db: psycopg.Connection[Any]
) -> None:
    """jsonb cannot hold U+0000; an error text containing it must still be written."""
    ran: list[int] = []

    @app.task(name="fail.nul", max_attempts=1)
    def nul() -> None:
        raise ValueError("bad\x00byte")

    @app.task(name="fail.after_nul")
    def after(n: int) -> None:
        ran.append(n)

    job_id = nul.enqueue()
    other = after.enqueue(1)
    app.run_worker(concurrency=1, burst=True, install_signal_handlers=False)

    state, _attempt, errors = _finished(db, job_id)
    assert state == "dead"
    assert errors[0]["error"] == "ValueError: bad\\x00byte"
    assert "bad\\x00byte" in errors[0]["traceback"]
    assert ran == [1]
    assert _finished(db, other)[0] == "succeeded"
