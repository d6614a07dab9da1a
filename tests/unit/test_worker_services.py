"""The worker keeps its background services alive: one that crashes is restarted with
backoff instead of stopping the process; only an outdated worker stops."""

from __future__ import annotations

import asyncio
import logging

import pytest

from pgjobs import App
from pgjobs.worker import Worker
from pgjobs.worker.session import WorkerOutdated


def test_a_crashed_service_is_restarted_and_the_worker_keeps_going(
    caplog: pytest.LogCaptureFixture,
) -> None:
    worker = Worker(App(dsn="host=/nonexistent dbname=x"))
    runs: list[int] = []

    async def flaky() -> None:
        runs.append(len(runs))
        if len(runs) < 3:
            raise RuntimeError(f"bug number {len(runs)}")

    with caplog.at_level(logging.ERROR, logger="pgjobs.worker"):
        asyncio.run(worker._supervise(flaky, "flaky"))
    assert runs == [0, 1, 2]
    assert worker.exit_code == 0
    assert not worker._stop.is_set()
    assert caplog.text.count("worker flaky task crashed; restarting it in") == 2
    assert "bug number 2" in caplog.text


def test_an_outdated_worker_stops_with_exit_code_1(caplog: pytest.LogCaptureFixture) -> None:
    worker = Worker(App(dsn="host=/nonexistent dbname=x"))

    async def outdated() -> None:
        raise WorkerOutdated("pgjobs worker 3 speaks protocol 2, older than this schema")

    with caplog.at_level(logging.CRITICAL, logger="pgjobs.worker"):
        asyncio.run(worker._supervise(outdated, "session"))
    assert worker.exit_code == 1
    assert worker._stop.is_set()
    assert "older than this schema" in caplog.text
