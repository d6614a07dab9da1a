"""pgjobs.worker.executor.Executor: running one job's handler and turning it into an Outcome.

No database: jobs are built by hand and run with a FrozenClock and a seeded rng.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest

import pgjobs
from pgjobs import App, Backoff, Discard, FrozenClock, Job, PgJobsError, Retry
from pgjobs.task import DEFAULT_MAX_ATTEMPTS
from pgjobs.worker.executor import UNKNOWN_TASK_BACKOFF, Executor
from pgjobs.worker.outcome import Kind, Outcome
from pgjobs.worker.threads import ThreadRunner

T = TypeVar("T")

START = datetime(2026, 4, 1, 12, 0, tzinfo=UTC)
NO_JITTER = Backoff(initial=10, factor=2, max=3600, jitter=0)


def make_job(
    task: str,
    *args: Any,
    kwargs: dict[str, Any] | None = None,
    attempt: int = 1,
    max_attempts: int | None = None,
    job_id: int = 1,
) -> Job:
    return Job(
        id=job_id,
        task=task,
        queue="default",
        args=list(args),
        kwargs=kwargs or {},
        priority=0,
        attempt=attempt,
        max_attempts=max_attempts,
        enqueued_at=START,
        run_at=START,
        started_at=START,
        dedup_key=None,
        worker_id=42,
    )


def with_executor(app: App, body: Callable[[Executor], Awaitable[T]], seed: int = 0) -> T:
    """Run `body(executor)` on a fresh event loop with a fresh thread pool."""

    async def main() -> T:
        runner = ThreadRunner(2)
        try:
            return await body(Executor(app.tasks, runner, FrozenClock(START), random.Random(seed)))
        finally:
            runner.shutdown()

    return asyncio.run(main())


def run(app: App, job: Job, seed: int = 0) -> Outcome:
    return with_executor(app, lambda executor: executor.run(job), seed)


def error_of(outcome: Outcome) -> dict[str, Any]:
    assert outcome.error is not None
    record = json.loads(outcome.error)
    assert isinstance(record, dict)
    return record


@pytest.fixture
def app() -> App:
    return App(dsn="host=/nonexistent dbname=x")


# --- success --------------------------------------------------------------------------------


def test_sync_handler_succeeds(app: App) -> None:
    calls: list[tuple[str, int]] = []

    @app.task(name="add")
    def add(name: str, n: int = 1) -> int:
        calls.append((name, n))
        return n

    job = make_job("add", "x", kwargs={"n": 3})
    outcome = run(app, job)
    assert outcome == Outcome(job, Kind.SUCCEEDED)
    assert outcome.error is None
    assert calls == [("x", 3)]


def test_async_handler_succeeds(app: App) -> None:
    calls: list[int] = []

    @app.task(name="async.add")
    async def add(n: int) -> None:
        await asyncio.sleep(0)
        calls.append(n)

    outcome = run(app, make_job("async.add", 7))
    assert outcome.kind is Kind.SUCCEEDED
    assert calls == [7]


# --- failures and retries -------------------------------------------------------------------


def _failing(app: App, **options: Any) -> None:
    @app.task(name="fails", **options)
    def fails() -> None:
        raise ValueError("boom")


def test_exception_retries_with_backoff(app: App) -> None:
    _failing(app, max_attempts=3, retry=NO_JITTER)
    first = run(app, make_job("fails", attempt=1))
    second = run(app, make_job("fails", attempt=2))
    assert (first.kind, first.delay) == (Kind.RETRY, 10.0)
    assert (second.kind, second.delay) == (Kind.RETRY, 20.0)
    record = error_of(first)
    assert record["kind"] == "exception"
    assert record["error"] == "ValueError: boom"
    assert record["attempt"] == 1
    assert record["at"] == START.isoformat()
    assert record["worker_id"] == 42
    assert "ValueError: boom" in record["traceback"]


def test_jittered_backoff_uses_the_executor_rng(app: App) -> None:
    backoff = Backoff(initial=10, factor=2, max=3600, jitter=0.5)
    _failing(app, max_attempts=5, retry=backoff)
    outcome = run(app, make_job("fails", attempt=3), seed=123)
    assert outcome.kind is Kind.RETRY
    assert outcome.delay == backoff.delay(3, random.Random(123))
    assert 20 <= outcome.delay <= 60


def test_exception_on_last_attempt_is_dead_with_traceback(app: App) -> None:
    _failing(app, max_attempts=3, retry=NO_JITTER)
    outcome = run(app, make_job("fails", attempt=3))
    assert outcome.kind is Kind.DEAD
    assert outcome.delay == 0
    record = error_of(outcome)
    assert record["kind"] == "exception"
    assert record["attempt"] == 3
    assert "Traceback (most recent call last)" in record["traceback"]
    assert 'raise ValueError("boom")' in record["traceback"]


def test_job_max_attempts_overrides_the_task(app: App) -> None:
    _failing(app, max_attempts=5, retry=NO_JITTER)
    assert run(app, make_job("fails", attempt=1, max_attempts=1)).kind is Kind.DEAD
    assert run(app, make_job("fails", attempt=4, max_attempts=9)).kind is Kind.RETRY


def test_async_exception_retries(app: App) -> None:
    @app.task(name="async.fails", max_attempts=2, retry=NO_JITTER)
    async def fails() -> None:
        raise KeyError("missing")

    outcome = run(app, make_job("async.fails"))
    assert (outcome.kind, outcome.delay) == (Kind.RETRY, 10.0)
    assert error_of(outcome)["error"] == "KeyError: 'missing'"


def test_system_exit_in_a_handler_is_a_failure(app: App) -> None:
    @app.task(name="exits", max_attempts=2, retry=NO_JITTER)
    def exits() -> None:
        raise SystemExit(3)

    outcome = run(app, make_job("exits"))
    assert outcome.kind is Kind.RETRY
    assert error_of(outcome)["error"] == "SystemExit: 3"


def test_retry_with_delay(app: App) -> None:
    @app.task(name="later", max_attempts=3, retry=NO_JITTER)
    def later() -> None:
        raise Retry(delay=timedelta(seconds=42))

    outcome = run(app, make_job("later"))
    assert (outcome.kind, outcome.delay) == (Kind.RETRY, 42.0)
    record = error_of(outcome)
    assert record["kind"] == "retry"
    assert record["error"] == "retry requested (in 42s)"


def test_retry_without_delay_uses_backoff(app: App) -> None:
    @app.task(name="again", max_attempts=3, retry=NO_JITTER)
    async def again() -> None:
        raise Retry(reason="not ready")

    outcome = run(app, make_job("again", attempt=2))
    assert (outcome.kind, outcome.delay) == (Kind.RETRY, 20.0)
    assert error_of(outcome)["error"] == "not ready"


def test_retry_on_last_attempt_is_dead(app: App) -> None:
    @app.task(name="later", max_attempts=2)
    def later() -> None:
        raise Retry(delay=5, reason="busy")

    outcome = run(app, make_job("later", attempt=2))
    assert outcome.kind is Kind.DEAD
    record = error_of(outcome)
    assert record["kind"] == "retry"
    assert "busy, but all 2 attempts are used" in record["error"]


def test_discard_is_dead_at_once(app: App) -> None:
    @app.task(name="drop", max_attempts=5)
    def drop() -> None:
        raise Discard("customer deleted")

    outcome = run(app, make_job("drop", attempt=1))
    assert outcome.kind is Kind.DEAD
    record = error_of(outcome)
    assert record["kind"] == "discard"
    assert record["error"] == "discarded: customer deleted"
    assert "Discard: customer deleted" in record["traceback"]


# --- jobs that cannot run -------------------------------------------------------------------


def test_unknown_task_retries_naming_the_registered_ones(app: App) -> None:
    app.task(name="b.second")(lambda: None)
    app.task(name="a.first")(lambda: None)
    outcome = run(app, make_job("missing.task"))
    assert outcome.kind is Kind.RETRY
    base = UNKNOWN_TASK_BACKOFF.initial
    jitter = UNKNOWN_TASK_BACKOFF.jitter
    assert base * (1 - jitter) <= outcome.delay <= base * (1 + jitter)
    record = error_of(outcome)
    assert record["kind"] == "unknown_task"
    assert "unknown task 'missing.task'" in record["error"]
    assert "(registered: a.first, b.second)" in record["error"]


def test_unknown_task_on_last_attempt_is_dead(app: App) -> None:
    outcome = run(app, make_job("missing.task", attempt=DEFAULT_MAX_ATTEMPTS))
    assert outcome.kind is Kind.DEAD
    assert "(registered: none)" in error_of(outcome)["error"]


def test_arguments_that_do_not_fit_are_dead_at_once(app: App) -> None:
    calls: list[object] = []

    @app.task(name="strict", max_attempts=5)
    def strict(a: int) -> None:
        calls.append(a)

    outcome = run(app, make_job("strict", 1, 2, attempt=1))
    assert outcome.kind is Kind.DEAD
    record = error_of(outcome)
    assert record["kind"] == "bad_arguments"
    assert "arguments do not fit the handler" in record["error"]
    assert "too many positional arguments" in record["error"]
    unexpected = run(app, make_job("strict", kwargs={"a": 1, "b": 1}))
    assert "unexpected keyword argument 'b'" in error_of(unexpected)["error"]
    assert calls == []


def test_attempt_beyond_max_attempts_is_exhausted(app: App) -> None:
    calls: list[int] = []

    @app.task(name="once", max_attempts=3)
    def once() -> None:
        calls.append(1)

    outcome = run(app, make_job("once", attempt=4))
    assert outcome.kind is Kind.DEAD
    record = error_of(outcome)
    assert record["kind"] == "exhausted"
    assert "attempt 4 exceeds max_attempts=3" in record["error"]
    assert calls == []


# --- timeouts -------------------------------------------------------------------------------


def test_async_timeout_cancels_the_handler(app: App) -> None:
    cancelled: list[bool] = []

    @app.task(name="slow", timeout=0.05, max_attempts=2, retry=NO_JITTER)
    async def slow() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    outcome = run(app, make_job("slow"))
    assert (outcome.kind, outcome.delay) == (Kind.RETRY, 10.0)
    record = error_of(outcome)
    assert record["kind"] == "timeout"
    assert "JobTimeout" in record["traceback"]
    assert record["error"] == "timed out after 0.05s (cancelled)"
    assert cancelled == [True]


def test_async_timeout_on_last_attempt_is_dead(app: App) -> None:
    @app.task(name="slow", timeout=0.05, max_attempts=1)
    async def slow() -> None:
        await asyncio.sleep(60)

    outcome = run(app, make_job("slow"))
    assert outcome.kind is Kind.DEAD
    assert error_of(outcome)["kind"] == "timeout"


def test_async_handler_own_timeout_error_is_not_a_job_timeout(app: App) -> None:
    # A TimeoutError the handler raises itself (an HTTP call, a lock) is its own failure,
    # not pgjobs cancelling it at the task's timeout.
    @app.task(name="calls.upstream", timeout=30, max_attempts=2, retry=NO_JITTER)
    async def upstream() -> None:
        raise TimeoutError("upstream did not answer")

    outcome = run(app, make_job("calls.upstream"))
    assert outcome.kind is Kind.RETRY
    record = error_of(outcome)
    assert record["kind"] == "exception"
    assert record["error"] == "TimeoutError: upstream did not answer"


def test_sync_timeout_waits_for_the_thread(app: App) -> None:
    finished = threading.Event()

    @app.task(name="sync.slow", timeout=0.05, max_attempts=2, retry=NO_JITTER)
    def slow() -> str:
        time.sleep(0.3)
        finished.set()
        return "result is discarded"

    outcome = run(app, make_job("sync.slow"))
    # The outcome only exists once the handler's thread has returned.
    assert finished.is_set()
    assert (outcome.kind, outcome.delay) == (Kind.RETRY, 10.0)
    record = error_of(outcome)
    assert record["kind"] == "timeout"
    assert record["error"].startswith("timed out: ran ")
    assert "timeout is 0.05s" in record["error"]


def test_sync_timeout_reported_even_if_the_handler_then_fails(app: App) -> None:
    @app.task(name="sync.slow", timeout=0.05, max_attempts=1)
    def slow() -> None:
        time.sleep(0.2)
        raise ValueError("late failure")

    outcome = run(app, make_job("sync.slow"))
    assert outcome.kind is Kind.DEAD
    assert error_of(outcome)["kind"] == "timeout"


def test_sync_handler_within_timeout_succeeds(app: App) -> None:
    @app.task(name="sync.quick", timeout=30)
    def quick() -> None: ...

    assert run(app, make_job("sync.quick")).kind is Kind.SUCCEEDED


# --- current_job() --------------------------------------------------------------------------


def test_current_job_outside_a_handler() -> None:
    with pytest.raises(PgJobsError, match="only available inside a running job"):
        pgjobs.current_job()


def test_current_job_in_sync_handler(app: App) -> None:
    seen: list[Job] = []

    @app.task(name="who")
    def who() -> None:
        seen.append(pgjobs.current_job())

    job = make_job("who", job_id=77)
    assert run(app, job).kind is Kind.SUCCEEDED
    assert seen == [job]
    assert seen[0].id == 77
    assert seen[0].attempt == 1


def test_current_job_in_async_handler(app: App) -> None:
    seen: list[Job] = []

    @app.task(name="who")
    async def who() -> None:
        await asyncio.sleep(0)
        seen.append(pgjobs.current_job())

    job = make_job("who", job_id=78, attempt=2)
    assert run(app, job).kind is Kind.SUCCEEDED
    assert seen == [job]


def test_current_job_is_cleared_after_the_handler(app: App) -> None:
    @app.task(name="noop")
    def noop() -> None: ...

    async def body(executor: Executor) -> None:
        await executor.run(make_job("noop"))
        with pytest.raises(PgJobsError):
            pgjobs.current_job()

    with_executor(app, body)


def test_concurrent_async_jobs_each_see_their_own_job(app: App) -> None:
    seen: list[tuple[int, int]] = []

    @app.task(name="who")
    async def who(n: int) -> None:
        for _ in range(3):
            await asyncio.sleep(0)
            seen.append((n, pgjobs.current_job().id))

    async def body(executor: Executor) -> list[Outcome]:
        jobs = [make_job("who", n, job_id=n) for n in range(1, 5)]
        return await asyncio.gather(*(executor.run(job) for job in jobs))

    outcomes = with_executor(app, body)
    assert [o.kind for o in outcomes] == [Kind.SUCCEEDED] * 4
    assert len(seen) == 12
    assert all(n == job_id for n, job_id in seen)


def test_concurrent_sync_jobs_each_see_their_own_job(app: App) -> None:
    seen: list[tuple[int, int]] = []
    lock = threading.Lock()

    @app.task(name="who")
    def who(n: int) -> None:
        job_id = pgjobs.current_job().id
        with lock:
            seen.append((n, job_id))

    async def body(executor: Executor) -> list[Outcome]:
        jobs = [make_job("who", n, job_id=n) for n in range(1, 7)]
        return await asyncio.gather(*(executor.run(job) for job in jobs))

    outcomes = with_executor(app, body)
    assert [o.kind for o in outcomes] == [Kind.SUCCEEDED] * 6
    assert sorted(seen) == [(n, n) for n in range(1, 7)]


# --- which jobs a thread runs (what a lost session must exit for) ---------------------------


def test_in_threads_holds_a_sync_job_exactly_while_its_handler_runs(app: App) -> None:
    started = threading.Event()
    release = threading.Event()

    @app.task(name="blocking")
    def blocking() -> None:
        started.set()
        release.wait(10)

    @app.task(name="coroutine")
    async def coroutine() -> None:
        await asyncio.sleep(0)

    async def body(executor: Executor) -> list[set[int]]:
        seen = []
        sync_run = asyncio.create_task(executor.run(make_job("blocking", job_id=7)))
        assert await asyncio.to_thread(started.wait, 10)
        seen.append(set(executor.in_threads))
        await executor.run(make_job("coroutine", job_id=8))
        await executor.run(make_job("unknown", job_id=9))
        seen.append(set(executor.in_threads))
        release.set()
        await sync_run
        seen.append(set(executor.in_threads))
        return seen

    assert with_executor(app, body) == [{7}, {7}, set()]


def test_async_handler_that_swallows_its_timeout_still_times_out(app: App) -> None:
    """Catching the cancellation and returning does not turn an overrun into a success."""

    @app.task(name="stubborn", timeout=0.05, max_attempts=2, retry=NO_JITTER)
    async def stubborn() -> str:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            return "finished anyway"
        return "never"

    outcome = run(app, make_job("stubborn"))
    assert (outcome.kind, outcome.delay) == (Kind.RETRY, 10.0)
    record = error_of(outcome)
    assert record["kind"] == "timeout"
    assert record["error"] == "timed out after 0.05s (ignored its cancellation)"


# --- rows the worker cannot use -----------------------------------------------------------


def test_a_broken_row_fails_like_an_exception_and_never_runs_the_handler(app: App) -> None:
    calls: list[object] = []

    @app.task(name="victim", max_attempts=3, retry=NO_JITTER)
    def victim(**kwargs: object) -> None:
        calls.append(kwargs)

    job = dataclasses.replace(make_job("victim"), broken="the job's kwargs cannot be decoded")
    outcome = run(app, job)
    assert (outcome.kind, outcome.delay) == (Kind.RETRY, 10.0)
    record = error_of(outcome)
    assert (record["kind"], record["error"]) == ("bad_row", "the job's kwargs cannot be decoded")
    last = run(app, dataclasses.replace(job, attempt=3))
    assert last.kind is Kind.DEAD
    assert error_of(last)["kind"] == "bad_row"
    assert calls == []
