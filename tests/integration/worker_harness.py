"""Shared helpers for tests that run a worker on the test's own event loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pgjobs
from pgjobs.worker import Worker, WorkerConfig

WAIT = 10.0  # generous upper bound for anything that should happen "promptly"


async def until(check: Callable[[], Awaitable[bool]], what: str, limit: float = WAIT) -> None:
    """Poll `check` until true; fail the test after `limit` seconds."""
    deadline = time.monotonic() + limit
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {limit}s waiting for {what}")
        await asyncio.sleep(0.02)


def sync_check(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    """A plain predicate as the awaitable `until` polls."""

    async def wrapped() -> bool:
        return check()

    return wrapped


@asynccontextmanager
async def running_worker(app: pgjobs.App, config: WorkerConfig) -> AsyncIterator[Worker]:
    """A worker running on this loop, registered (session ready) when the block starts;
    stopped gracefully at the end, and it must exit cleanly."""
    worker = Worker(app, config)
    runner = asyncio.create_task(worker.run_async())

    async def registered() -> bool:
        if runner.done():
            await runner
            raise AssertionError("worker exited during startup")
        session = getattr(worker, "session", None)
        return session is not None and session.ready.is_set()

    try:
        await until(registered, "the worker to register")
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(runner, 30)
    assert worker.exit_code == 0
