"""Hooks around jobs: `app.middleware(MyHooks())` runs them for every job and enqueue.

Subclass `Middleware` and override the hooks you need; the others cost nothing. Worker
hooks run on the worker's event loop, inside the job's own asyncio task (so a context
variable set in `before_job` is seen by the handler, sync or async, and by `after_job`).
Keep `before_job` and `after_job` quick: they run for every job (with only `on_retry`,
`on_dead` and `on_release` hooks, a job that succeeds calls none). A hook that raises is
logged and ignored; it never fails the job or stops the worker. The built-in job logging
and Prometheus metrics are middleware too.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pgjobs.job import Job

log = logging.getLogger("pgjobs.middleware")


class JobOutcome(StrEnum):
    """How one run of a job ended."""

    SUCCEEDED = "succeeded"
    RETRIED = "retried"  # failed; queued again for a later attempt
    DEAD = "dead"  # failed for good (attempts exhausted, Discard, unknown task...)
    RELEASED = "released"  # handed back unfinished at shutdown


@dataclass(slots=True)
class JobResult:
    """What `after_job`, `on_retry`, `on_dead` and `on_release` receive about a run."""

    outcome: JobOutcome
    duration: float  # seconds from the start of the run (after before_job) to its outcome
    error: str | None = None  # the error recorded with the job, for failures
    exception: BaseException | None = None  # what the handler raised, if anything
    retry_in: float | None = None  # seconds until the next attempt (RETRIED only)


@dataclass(frozen=True, slots=True)
class EnqueuedJob:
    """What `on_enqueue` receives. With `transactional`, the job was written in the
    caller's open transaction and exists only if that transaction commits."""

    id: int
    task: str
    queue: str
    dedup_key: str | None
    transactional: bool


class Middleware:
    """Base class of job hooks; every hook does nothing unless overridden."""

    def on_enqueue(self, job: EnqueuedJob) -> None:
        """A job was enqueued from Python (a duplicate `dedup_key` reports the existing id)."""

    def before_job(self, job: Job) -> None:
        """A worker is about to run `job` (called for every claimed job)."""

    def after_job(self, job: Job, result: JobResult) -> None:
        """`job`'s run ended; its outcome is written to the database right after."""

    def on_retry(self, job: Job, result: JobResult) -> None:
        """`job` failed and will run again in `result.retry_in` seconds (after after_job)."""

    def on_dead(self, job: Job, result: JobResult) -> None:
        """`job` failed for good (after after_job)."""

    def on_release(self, job: Job, result: JobResult) -> None:
        """`job` was handed back unfinished at shutdown (after after_job)."""


def _overridden(items: Sequence[Middleware], hook: str) -> list[tuple[Middleware, Any]]:
    return [
        (item, getattr(item, hook))
        for item in items
        if getattr(type(item), hook) is not getattr(Middleware, hook)
    ]


class HookChain:
    """The hooks of some middleware, in registration order; calls only overridden ones."""

    def __init__(self, items: Iterable[Middleware] = ()):
        self.items: tuple[Middleware, ...] = tuple(items)
        for item in self.items:
            if not isinstance(item, Middleware):
                raise TypeError(f"middleware must be a pgjobs.Middleware, got {item!r}")
        self._enqueue = _overridden(self.items, "on_enqueue")
        self._before = _overridden(self.items, "before_job")
        self._after = _overridden(self.items, "after_job")
        self._retry = _overridden(self.items, "on_retry")
        self._dead = _overridden(self.items, "on_dead")
        self._release = _overridden(self.items, "on_release")
        # Hooks that see every job; without them, a job that succeeds costs no hook call.
        self.every_job = bool(self._before or self._after)
        self.runs_jobs = self.every_job or bool(self._retry or self._dead or self._release)
        self._reported: set[tuple[int, str]] = set()

    def __bool__(self) -> bool:
        return bool(self.items)

    def enqueued(
        self,
        ids: Sequence[int],
        task: str,
        queue: str,
        dedup_key: str | None,
        transactional: bool,
    ) -> None:
        if not self._enqueue:
            return
        for job_id in ids:
            event = EnqueuedJob(job_id, task, queue, dedup_key, transactional)
            for item, hook in self._enqueue:
                try:
                    hook(event)
                except Exception:
                    self._failed(item, "on_enqueue")

    def enqueued_params(self, job_id: int, params: Mapping[str, Any], transactional: bool) -> None:
        """`enqueued` for the parameters of one `enqueue` query."""
        if self._enqueue:
            self.enqueued(
                [job_id], params["task"], params["queue"], params["dedup_key"], transactional
            )

    # The loops below are written out, with no helper call per hook: they run for every job.
    def before_job(self, job: Job) -> None:
        for item, hook in self._before:
            try:
                hook(job)
            except Exception:
                self._failed(item, "before_job")

    def after_job(self, job: Job, result: JobResult) -> None:
        for item, hook in self._after:
            try:
                hook(job, result)
            except Exception:
                self._failed(item, "after_job")
        if result.outcome is JobOutcome.RETRIED:
            for item, hook in self._retry:
                try:
                    hook(job, result)
                except Exception:
                    self._failed(item, "on_retry")
        elif result.outcome is JobOutcome.DEAD:
            for item, hook in self._dead:
                try:
                    hook(job, result)
                except Exception:
                    self._failed(item, "on_dead")
        elif result.outcome is JobOutcome.RELEASED:
            for item, hook in self._release:
                try:
                    hook(job, result)
                except Exception:
                    self._failed(item, "on_release")

    def _failed(self, item: Middleware, name: str) -> None:
        """Log the exception being handled: a hook's first failure with its traceback at
        ERROR, later ones at DEBUG."""
        key = (id(item), name)
        if key in self._reported:
            log.debug("middleware %r failed in %s again", item, name, exc_info=True)
            return
        self._reported.add(key)
        log.exception(
            "middleware %r failed in %s (ignored; further failures of this hook are "
            "logged at DEBUG)",
            item,
            name,
        )
