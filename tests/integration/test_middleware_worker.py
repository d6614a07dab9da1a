"""`app.middleware` with real enqueues and a real worker: every hook, in order, with the
right outcome, and context set in before_job reaching the handler like a tracing span."""

from __future__ import annotations

import asyncio
import contextvars
from collections import defaultdict
from typing import Any

import psycopg

import pgjobs
from pgjobs import EnqueuedJob, Job, JobOutcome, JobResult, Middleware

CURRENT_SPAN: contextvars.ContextVar[str | None] = contextvars.ContextVar("span", default=None)


class Tracer(Middleware):
    """What an OpenTelemetry middleware does, with a context variable as the 'span'."""

    def __init__(self) -> None:
        self.enqueued: list[EnqueuedJob] = []
        self.events: dict[int, list[str]] = defaultdict(list)
        self.results: dict[int, list[JobResult]] = defaultdict(list)
        self.tokens: dict[int, contextvars.Token[str | None]] = {}

    def on_enqueue(self, job: EnqueuedJob) -> None:
        self.enqueued.append(job)

    def before_job(self, job: Job) -> None:
        self.tokens[job.id] = CURRENT_SPAN.set(f"span {job.id}/{job.attempt}")
        self.events[job.id].append(f"before {job.attempt}")

    def after_job(self, job: Job, result: JobResult) -> None:
        self.events[job.id].append(f"after {result.outcome.value}")
        self.results[job.id].append(result)
        CURRENT_SPAN.reset(self.tokens.pop(job.id))

    def on_retry(self, job: Job, result: JobResult) -> None:
        self.events[job.id].append("retry")

    def on_dead(self, job: Job, result: JobResult) -> None:
        self.events[job.id].append("dead")


def test_every_hook_fires_around_real_jobs(app: pgjobs.App) -> None:
    tracer = app.middleware(Tracer())
    assert isinstance(tracer, Tracer)
    spans: list[str | None] = []

    @app.task(name="mw.ok")
    def ok() -> None:
        spans.append(CURRENT_SPAN.get())

    @app.task(name="mw.async_ok")
    async def async_ok() -> None:
        spans.append(CURRENT_SPAN.get())

    @app.task(name="mw.flaky", max_attempts=3, retry=pgjobs.Backoff(initial=0, jitter=0))
    def flaky() -> None:
        if pgjobs.current_job().attempt < 2:
            raise ConnectionError("try again")

    @app.task(name="mw.broken", max_attempts=1)
    def broken() -> None:
        raise ValueError("bad data")

    ok_id, async_id = ok.enqueue(), async_ok.enqueue()
    flaky_id, broken_id = flaky.enqueue(), broken.enqueue()
    app.run_worker(burst=True, install_signal_handlers=False)

    assert tracer.events[ok_id] == ["before 1", "after succeeded"]
    assert tracer.events[async_id] == ["before 1", "after succeeded"]
    assert sorted(spans) == sorted([f"span {ok_id}/1", f"span {async_id}/1"])
    assert tracer.events[flaky_id] == [
        "before 1",
        "after retried",
        "retry",
        "before 2",
        "after succeeded",
    ]
    assert tracer.results[flaky_id][0].error == "ConnectionError: try again"
    assert tracer.results[flaky_id][0].retry_in == 0
    assert tracer.events[broken_id] == ["before 1", "after dead", "dead"]
    [result] = tracer.results[broken_id]
    assert isinstance(result.exception, ValueError)
    assert result.duration >= 0
    assert all(r.outcome is not JobOutcome.RELEASED for rs in tracer.results.values() for r in rs)
    assert tracer.tokens == {}


def test_on_enqueue_sees_every_way_of_enqueueing(app: pgjobs.App, dsn: str) -> None:
    tracer = app.middleware(Tracer())

    @app.task(name="mw.send", queue="email")
    def send(to: str) -> None:
        pass

    one = send.enqueue("a@b.c")
    keyed = send.options(dedup_key="welcome:1", queue="vip").enqueue("b@b.c")
    duplicate = send.options(dedup_key="welcome:1", queue="vip").enqueue("b@b.c")
    many = send.enqueue_many([{"to": "x"}, {"to": "y"}])
    by_name = app.enqueue("mw.other", kwargs={"n": 1})
    with psycopg.connect(dsn) as conn:
        in_tx = send.options(conn=conn).enqueue("c@b.c")

    async def enqueue_async() -> list[int]:
        try:
            return [
                await send.enqueue_async("d@b.c"),
                *(await send.enqueue_many_async([{"to": "z"}])),
                await app.enqueue_async("mw.other"),
            ]
        finally:
            await app.aclose()

    async_ids = asyncio.run(enqueue_async())

    assert duplicate == keyed
    seen = [(e.id, e.task, e.queue, e.dedup_key, e.transactional) for e in tracer.enqueued]
    assert seen == [
        (one, "mw.send", "email", None, False),
        (keyed, "mw.send", "vip", "welcome:1", False),
        (keyed, "mw.send", "vip", "welcome:1", False),
        (many[0], "mw.send", "email", None, False),
        (many[1], "mw.send", "email", None, False),
        (by_name, "mw.other", "default", None, False),
        (in_tx, "mw.send", "email", None, True),
        (async_ids[0], "mw.send", "email", None, False),
        (async_ids[1], "mw.send", "email", None, False),
        (async_ids[2], "mw.other", "default", None, False),
    ]


def test_a_broken_middleware_never_loses_a_job(app: pgjobs.App, db: Any) -> None:
    class Broken(Middleware):
        def on_enqueue(self, job: EnqueuedJob) -> None:
            raise RuntimeError("tracing backend down")

        def before_job(self, job: Job) -> None:
            raise RuntimeError("tracing backend down")

    app.middleware(Broken())

    @app.task(name="mw.ok")
    def ok() -> None:
        pass

    job_id = ok.enqueue()
    app.run_worker(burst=True, install_signal_handlers=False)
    row = db.execute("SELECT state FROM pgjobs.job_history WHERE id = %s", (job_id,)).fetchone()
    assert row == ("succeeded",)
