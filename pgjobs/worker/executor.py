"""Runs one claimed job's handler and turns what happened into an Outcome.

Async handlers run on the event loop and are cancelled at their timeout. Sync handlers run
in a thread pool; Python cannot stop a thread, so a sync handler that overruns its timeout
keeps its slot until it returns, and the attempt is then failed with JobTimeout (its
result discarded). The job is never handed to another worker while its thread still runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pgjobs.backoff import Backoff
from pgjobs.clock import Clock
from pgjobs.context import set_current
from pgjobs.errors import Discard, JobTimeout, Retry
from pgjobs.job import Job
from pgjobs.middleware import HookChain, JobOutcome, JobResult
from pgjobs.task import DEFAULT_MAX_ATTEMPTS, Task
from pgjobs.worker.outcome import Kind, Outcome, describe_exception, error_record
from pgjobs.worker.threads import ThreadRunner

log = logging.getLogger("pgjobs.worker")

UNKNOWN_TASK_BACKOFF = Backoff(initial=5, factor=2, max=300)
MAX_RETRY_DELAY = 10 * 365 * 86400.0  # keeps now() + delay a valid timestamp

_OUTCOMES = {Kind.RETRY: JobOutcome.RETRIED, Kind.DEAD: JobOutcome.DEAD}


@dataclass(frozen=True)
class _Failure(Outcome):
    """A failed run's outcome, carrying what middleware reports about it."""

    message: str = ""
    exception: BaseException | None = None


class Executor:
    def __init__(
        self,
        tasks: dict[str, Task[Any, Any]],
        threads: ThreadRunner,
        clock: Clock,
        rng: random.Random | None = None,
        hooks: HookChain | None = None,
    ):
        self.tasks = tasks
        self.threads = threads
        self.clock = clock
        self.rng = rng or random.Random()
        self.hooks = hooks if hooks is not None and hooks.runs_jobs else None
        self.in_threads: set[int] = set()  # ids of the jobs whose sync handler is running
        # Run `job` and return its outcome, with the middleware hooks around it if any.
        self.run: Callable[[Job], Awaitable[Outcome]] = (
            self._run if self.hooks is None else self._run_with_hooks
        )

    async def _run_with_hooks(self, job: Job) -> Outcome:
        hooks = self.hooks
        assert hooks is not None
        clock = self.clock
        every_job = hooks.every_job
        if every_job:
            hooks.before_job(job)
        started = clock.monotonic()
        try:
            outcome = await self._run(job)
        except asyncio.CancelledError:
            hooks.after_job(job, JobResult(JobOutcome.RELEASED, clock.monotonic() - started))
            raise
        if outcome.kind is Kind.SUCCEEDED:
            if not every_job:  # only failure hooks (the default job logger): nothing to do
                return outcome
            result = JobResult(JobOutcome.SUCCEEDED, clock.monotonic() - started)
        else:
            result = JobResult(_OUTCOMES[outcome.kind], clock.monotonic() - started)
            if isinstance(outcome, _Failure):
                result.error = outcome.message
                result.exception = outcome.exception
                if outcome.kind is Kind.RETRY:
                    result.retry_in = outcome.delay
        hooks.after_job(job, result)
        return outcome

    async def _run(self, job: Job) -> Outcome:
        task = self.tasks.get(job.task)
        max_attempts = job.max_attempts or (task.max_attempts if task else DEFAULT_MAX_ATTEMPTS)
        if job.attempt > max_attempts:
            return self._dead(
                job,
                "exhausted",
                f"attempt {job.attempt} exceeds max_attempts={max_attempts} (the previous "
                "attempt's worker was lost); not run again",
            )
        if job.broken is not None:  # nothing in a row may stop the worker: the job fails
            backoff = task.retry if task is not None else UNKNOWN_TASK_BACKOFF
            return self._failed(job, max_attempts, backoff, "bad_row", job.broken)
        if task is None:
            known = ", ".join(sorted(self.tasks)) or "none"
            message = (
                f"unknown task {job.task!r}: no handler of that name is registered in this "
                f"worker (registered: {known})"
            )
            return self._failed(job, max_attempts, UNKNOWN_TASK_BACKOFF, "unknown_task", message)
        try:
            task.check_arguments(job.args, job.kwargs)
        except TypeError as exc:
            return self._dead(job, "bad_arguments", f"arguments do not fit the handler: {exc}")

        set_current(job)
        try:
            if task.is_async:
                await self._run_async(task, job)
            else:
                await self._run_sync(task, job)
        except asyncio.CancelledError:
            raise
        except Retry as retry:
            if job.attempt >= max_attempts:
                return self._dead(
                    job, "retry", f"{retry.reason}, but all {max_attempts} attempts are used", retry
                )
            delay = (
                retry.delay if retry.delay is not None else task.retry.delay(job.attempt, self.rng)
            )
            record = error_record(job, "retry", str(retry), self.clock.now())
            delay = min(delay, MAX_RETRY_DELAY)
            return _Failure(job, Kind.RETRY, delay, record, str(retry), retry)
        except Discard as discard:
            return self._dead(job, "discard", f"discarded: {discard.reason}", discard)
        except JobTimeout as exc:
            return self._failed(job, max_attempts, task.retry, "timeout", str(exc), exc)
        except BaseException as exc:
            return self._failed(
                job, max_attempts, task.retry, "exception", describe_exception(exc), exc
            )
        finally:
            set_current(None)
        return Outcome(job, Kind.SUCCEEDED)

    async def _run_async(self, task: Task[Any, Any], job: Job) -> None:
        if task.timeout is None:
            await task.fn(*job.args, **job.kwargs)
            return
        deadline = asyncio.timeout(task.timeout)
        try:
            async with deadline:
                await task.fn(*job.args, **job.kwargs)
        except TimeoutError as exc:
            if not deadline.expired():  # the handler's own TimeoutError, not ours
                raise
            raise JobTimeout(f"timed out after {task.timeout:g}s (cancelled)") from exc
        if deadline.expired():  # it swallowed the cancellation and returned: still too late
            raise JobTimeout(f"timed out after {task.timeout:g}s (ignored its cancellation)")

    async def _run_sync(self, task: Task[Any, Any], job: Job) -> None:
        self.in_threads.add(job.id)
        try:
            await self._run_in_thread(task, job)
        finally:
            self.in_threads.discard(job.id)

    async def _run_in_thread(self, task: Task[Any, Any], job: Job) -> None:
        call = functools.partial(task.fn, *job.args, **job.kwargs)
        future = self.threads.submit(functools.partial(contextvars.copy_context().run, call))
        if task.timeout is None:
            await future
            return
        started = self.clock.monotonic()
        done, _ = await asyncio.wait({future}, timeout=task.timeout)
        if done:
            future.result()
            return
        log.warning(
            "job %s (%s) overran its %gs timeout; a sync handler cannot be interrupted, "
            "waiting for it to return",
            job.id,
            job.task,
            task.timeout,
        )
        with contextlib.suppress(Exception):  # the timeout is what gets reported
            await future
        ran = self.clock.monotonic() - started
        raise JobTimeout(f"timed out: ran {ran:.1f}s, timeout is {task.timeout:g}s")

    def _failed(
        self,
        job: Job,
        max_attempts: int,
        backoff: Backoff,
        kind: str,
        message: str,
        exc: BaseException | None = None,
    ) -> Outcome:
        record = error_record(job, kind, message, self.clock.now(), exc)
        if job.attempt >= max_attempts:
            return _Failure(job, Kind.DEAD, 0.0, record, message, exc)
        delay = min(backoff.delay(job.attempt, self.rng), MAX_RETRY_DELAY)
        return _Failure(job, Kind.RETRY, delay, record, message, exc)

    def _dead(self, job: Job, kind: str, message: str, exc: BaseException | None = None) -> Outcome:
        record = error_record(job, kind, message, self.clock.now(), exc)
        return _Failure(job, Kind.DEAD, 0.0, record, message, exc)
