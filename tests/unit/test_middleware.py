"""pgjobs.middleware: the hook chain, and the executor calling it around each job.

No database: jobs are built by hand and run with a FrozenClock, as in test_executor.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import pgjobs
from pgjobs import App, Backoff, Discard, FrozenClock, Job, JobOutcome, JobResult, Middleware
from pgjobs.middleware import EnqueuedJob, HookChain
from pgjobs.worker.executor import Executor
from pgjobs.worker.outcome import Kind, Outcome
from pgjobs.worker.threads import ThreadRunner

START = datetime(2026, 4, 1, 12, 0, tzinfo=UTC)
NO_JITTER = Backoff(initial=10, factor=2, max=3600, jitter=0)
SPAN: contextvars.ContextVar[str | None] = contextvars.ContextVar("span", default=None)


def make_job(task: str, *args: Any, attempt: int = 1, job_id: int = 1) -> Job:
    return Job(
        id=job_id,
        task=task,
        queue="default",
        args=list(args),
        kwargs={},
        priority=0,
        attempt=attempt,
        max_attempts=None,
        enqueued_at=START,
        run_at=START,
        started_at=START,
        dedup_key=None,
        worker_id=42,
    )


class Recorder(Middleware):
    """Records every hook call; sets a context variable in before_job like a tracer would."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def on_enqueue(self, job: EnqueuedJob) -> None:
        self.calls.append(("on_enqueue", job))

    def before_job(self, job: Job) -> None:
        SPAN.set(f"span-{job.id}")
        self.calls.append(("before_job", job.id))

    def after_job(self, job: Job, result: JobResult) -> None:
        self.calls.append(("after_job", job.id, result, SPAN.get()))

    def on_retry(self, job: Job, result: JobResult) -> None:
        self.calls.append(("on_retry", job.id, result.retry_in))

    def on_dead(self, job: Job, result: JobResult) -> None:
        self.calls.append(("on_dead", job.id, result.error))


def run_jobs(app: App, jobs: list[Job], hooks: list[Middleware], clock: FrozenClock) -> list[Any]:
    async def main() -> list[Any]:
        runner = ThreadRunner(2)
        executor = Executor(app.tasks, runner, clock, random.Random(0), hooks=HookChain(hooks))
        try:
            return [await executor.run(job) for job in jobs]
        finally:
            runner.shutdown()

    return asyncio.run(main())


@pytest.fixture
def app() -> App:
    return App(dsn="host=/nonexistent dbname=x")


# --- the executor calls the hooks -----------------------------------------------------------


def test_success_calls_before_and_after_with_duration_and_context(app: App) -> None:
    seen_in_handler: list[str | None] = []
    clock = FrozenClock(START)

    @app.task(name="sync.ok")
    def sync_ok() -> None:
        seen_in_handler.append(SPAN.get())
        clock.advance(2.5)

    @app.task(name="async.ok")
    async def async_ok() -> None:
        seen_in_handler.append(SPAN.get())
        clock.advance(2.5)

    recorder = Recorder()
    jobs = [make_job("sync.ok", job_id=1), make_job("async.ok", job_id=2)]
    outcomes = run_jobs(app, jobs, [recorder], clock)

    assert [o.kind for o in outcomes] == [Kind.SUCCEEDED, Kind.SUCCEEDED]
    # Set in before_job: seen by the sync handler's thread, the async handler and after_job.
    assert seen_in_handler == ["span-1", "span-2"]
    assert [call[0] for call in recorder.calls] == [
        "before_job",
        "after_job",
        "before_job",
        "after_job",
    ]
    for call, job_id in zip(recorder.calls[1::2], (1, 2), strict=True):
        _, seen_id, result, span = call
        assert seen_id == job_id
        assert span == f"span-{job_id}"
        assert result.outcome is JobOutcome.SUCCEEDED
        assert result.duration == 2.5  # the handler's time, on the injected clock
        assert (result.error, result.exception, result.retry_in) == (None, None, None)


def test_failure_with_attempts_left_calls_after_then_on_retry(app: App) -> None:
    @app.task(name="fails", max_attempts=3, retry=NO_JITTER)
    def fails() -> None:
        raise ValueError("boom")

    recorder = Recorder()
    [outcome] = run_jobs(app, [make_job("fails", attempt=1)], [recorder], FrozenClock(START))

    assert outcome.kind is Kind.RETRY
    names = [call[0] for call in recorder.calls]
    assert names == ["before_job", "after_job", "on_retry"]
    result = recorder.calls[1][2]
    assert result.outcome is JobOutcome.RETRIED
    assert result.retry_in == 10.0
    assert result.error == "ValueError: boom"
    assert isinstance(result.exception, ValueError)
    assert recorder.calls[2] == ("on_retry", 1, 10.0)


def test_last_failure_and_discard_call_on_dead(app: App) -> None:
    @app.task(name="fails", max_attempts=2)
    def fails() -> None:
        raise RuntimeError("still broken")

    @app.task(name="discards")
    def discards() -> None:
        raise Discard("not wanted")

    recorder = Recorder()
    jobs = [make_job("fails", attempt=2, job_id=1), make_job("discards", job_id=2)]
    outcomes = run_jobs(app, jobs, [recorder], FrozenClock(START))

    assert [o.kind for o in outcomes] == [Kind.DEAD, Kind.DEAD]
    dead_calls = [call for call in recorder.calls if call[0] == "on_dead"]
    assert dead_calls == [
        ("on_dead", 1, "RuntimeError: still broken"),
        ("on_dead", 2, "discarded: not wanted"),
    ]
    results = [call[2] for call in recorder.calls if call[0] == "after_job"]
    assert [r.outcome for r in results] == [JobOutcome.DEAD, JobOutcome.DEAD]
    assert isinstance(results[1].exception, Discard)
    assert not [call for call in recorder.calls if call[0] == "on_retry"]


def test_unknown_task_and_retry_request_are_reported_too(app: App) -> None:
    @app.task(name="asks", max_attempts=5)
    def asks() -> None:
        raise pgjobs.Retry(delay=timedelta(seconds=30))

    recorder = Recorder()
    jobs = [make_job("nobody.knows", job_id=1), make_job("asks", job_id=2)]
    run_jobs(app, jobs, [recorder], FrozenClock(START))

    results = {call[1]: call[2] for call in recorder.calls if call[0] == "after_job"}
    assert results[1].outcome is JobOutcome.RETRIED
    assert "unknown task 'nobody.knows'" in (results[1].error or "")
    assert results[2].outcome is JobOutcome.RETRIED
    assert results[2].retry_in == 30.0
    assert isinstance(results[2].exception, pgjobs.Retry)


def test_a_cancelled_job_is_reported_released(app: App) -> None:
    started = asyncio.Event()

    @app.task(name="slow")
    async def slow() -> None:
        started.set()
        await asyncio.sleep(3600)

    recorder = Recorder()
    released: list[int] = []

    class OnRelease(Middleware):
        def on_release(self, job: Job, result: JobResult) -> None:
            released.append(job.id)

    async def main() -> None:
        runner = ThreadRunner(1)
        chain = HookChain([recorder, OnRelease()])
        executor = Executor(app.tasks, runner, FrozenClock(START), hooks=chain)
        task = asyncio.create_task(executor.run(make_job("slow")))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        runner.shutdown()

    asyncio.run(main())
    after = [call for call in recorder.calls if call[0] == "after_job"]
    assert len(after) == 1
    assert after[0][2].outcome is JobOutcome.RELEASED
    assert released == [1]


def test_with_failure_hooks_only_a_success_calls_nothing(app: App) -> None:
    class FailuresOnly(Middleware):
        def __init__(self) -> None:
            self.seen: list[tuple[str, int, JobOutcome]] = []

        def on_retry(self, job: Job, result: JobResult) -> None:
            self.seen.append(("retry", job.id, result.outcome))

        def on_dead(self, job: Job, result: JobResult) -> None:
            self.seen.append(("dead", job.id, result.outcome))

    @app.task(name="ok")
    def ok() -> None:
        pass

    @app.task(name="dies", max_attempts=1)
    def dies() -> None:
        raise ValueError("no")

    hooks = FailuresOnly()
    assert not HookChain([hooks]).every_job
    jobs = [make_job("ok", job_id=1), make_job("dies", job_id=2)]
    outcomes = run_jobs(app, jobs, [hooks], FrozenClock(START))
    assert [o.kind for o in outcomes] == [Kind.SUCCEEDED, Kind.DEAD]
    assert hooks.seen == [("dead", 2, JobOutcome.DEAD)]


def test_hooks_run_in_registration_order(app: App) -> None:
    order: list[str] = []

    class Named(Middleware):
        def __init__(self, name: str):
            self.name = name

        def before_job(self, job: Job) -> None:
            order.append(f"{self.name}.before")

        def after_job(self, job: Job, result: JobResult) -> None:
            order.append(f"{self.name}.after")

    @app.task(name="ok")
    def ok() -> None:
        order.append("handler")

    run_jobs(app, [make_job("ok")], [Named("a"), Named("b")], FrozenClock(START))
    assert order == ["a.before", "b.before", "handler", "a.after", "b.after"]


def test_a_failing_hook_is_logged_once_and_never_fails_the_job(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(Middleware):
        def after_job(self, job: Job, result: JobResult) -> None:
            raise KeyError("oops")

    @app.task(name="ok")
    def ok() -> None:
        pass

    recorder = Recorder()
    jobs = [make_job("ok", job_id=n) for n in (1, 2, 3)]
    with caplog.at_level(logging.DEBUG, logger="pgjobs.middleware"):
        outcomes = run_jobs(app, jobs, [Broken(), recorder], FrozenClock(START))

    assert [o.kind for o in outcomes] == [Kind.SUCCEEDED] * 3
    # The hooks after the broken one still ran, for every job.
    assert [c[1] for c in recorder.calls if c[0] == "after_job"] == [1, 2, 3]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "failed in after_job" in errors[0].getMessage()
    assert errors[0].exc_info is not None
    assert len([r for r in caplog.records if r.levelno == logging.DEBUG]) == 2


def test_without_job_hooks_the_executor_skips_the_wrapper(app: App) -> None:
    class EnqueueOnly(Middleware):
        def on_enqueue(self, job: EnqueuedJob) -> None:
            pass

    executor = Executor(
        app.tasks, ThreadRunner(1), FrozenClock(START), hooks=HookChain([EnqueueOnly()])
    )
    assert executor.hooks is None
    assert executor.run == executor._run  # no wrapper: no cost per job
    plain = Executor(app.tasks, ThreadRunner(1), FrozenClock(START))
    assert plain.hooks is None
    assert plain.run == plain._run


def test_a_plain_executor_still_returns_plain_outcomes(app: App) -> None:
    @app.task(name="ok")
    def ok() -> None:
        pass

    job = make_job("ok")
    [outcome] = run_jobs(app, [job], [], FrozenClock(START))
    assert outcome == Outcome(job, Kind.SUCCEEDED)


# --- the chain itself -----------------------------------------------------------------------


def test_chain_calls_only_overridden_hooks() -> None:
    class AfterOnly(Middleware):
        def after_job(self, job: Job, result: JobResult) -> None:
            pass

    chain = HookChain([Middleware(), AfterOnly()])
    assert chain.runs_jobs
    assert len(chain._after) == 1
    assert chain._before == []
    assert chain._enqueue == []
    assert not HookChain([Middleware()]).runs_jobs
    assert not HookChain()


def test_chain_refuses_objects_that_are_not_middleware() -> None:
    with pytest.raises(TypeError, match=r"pgjobs\.Middleware"):
        HookChain([object()])  # type: ignore[list-item]


def test_app_middleware_registers_in_order_and_returns_the_hooks(app: App) -> None:
    first, second = Recorder(), Recorder()
    assert app.middleware(first) is first
    app.middleware(second)
    assert app.hooks.items == (first, second)
    with pytest.raises(TypeError):
        app.middleware("not middleware")  # type: ignore[arg-type]
    assert app.hooks.items == (first, second)


def test_enqueued_events_carry_id_task_queue_and_transaction_flag() -> None:
    recorder = Recorder()
    chain = HookChain([recorder])
    chain.enqueued([7, 8], "emails.send", "email", None, transactional=True)
    params = {"task": "t", "queue": "q", "dedup_key": "k:1"}
    chain.enqueued_params(9, params, transactional=False)
    assert [call[1] for call in recorder.calls] == [
        EnqueuedJob(7, "emails.send", "email", None, True),
        EnqueuedJob(8, "emails.send", "email", None, True),
        EnqueuedJob(9, "t", "q", "k:1", False),
    ]
