"""Huge payloads: what pgjobs and Postgres do with 1 MB, 10 MB, 100 MB and 300 MB arguments.

pgjobs refuses arguments over `pgjobs.job.MAX_ARGUMENTS_BYTES` (10 MiB) at enqueue, before
any I/O. Raised past that, 1, 10 and 100 MB jobs go through a real worker process whole,
and a 300 MB one is refused by Postgres itself (a jsonb string holds at most 256 MiB - 1
bytes), with a clear error that is not mistaken for a connection problem. The figures
(times and the worker's peak memory) are printed, never asserted.
"""

from __future__ import annotations

import time
from pathlib import Path

import chaosapp
import pytest
from harness import Conn, Procs, check, read_runs, record, rss_bytes

import pgjobs
import pgjobs.job

pytestmark = pytest.mark.chaos

MB = 1000 * 1000


@pytest.mark.timeout(300)
def test_huge_payloads_up_to_postgres_own_limit(
    procs: Procs, db: Conn, dsn: str, chaos_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = pgjobs.App(dsn)
    task = app.task(name=chaosapp.BLOB)(chaosapp.blob.fn)
    with pytest.raises(ValueError, match="MAX_ARGUMENTS_BYTES"):
        task.enqueue("x" * (11 * MB))  # the default limit: refused before any I/O
    monkeypatch.setattr(pgjobs.job, "MAX_ARGUMENTS_BYTES", 400 * MB)

    ids: list[int] = []
    figures: dict[str, str] = {}
    try:
        for size in (1, 10, 100):
            started = time.monotonic()
            ids.append(task.enqueue("x" * (size * MB)))
            enqueued = time.monotonic() - started
            worker = procs.worker("--burst", "--concurrency", "1", name=f"blob{size}")
            started = time.monotonic()
            peak = 0
            while worker.running() and time.monotonic() - started < 180:
                peak = max(peak, rss_bytes(worker.pid, "VmHWM") // (1024 * 1024))
                time.sleep(0.02)
            assert worker.wait(10) == 0, worker.output()[-3000:]
            ran = time.monotonic() - started
            figures[f"{size}MB"] = (
                f"enqueue {enqueued:.2f}s, worker {ran:.2f}s, peak RSS {peak} MiB"
            )
        with pytest.raises(pgjobs.DatabaseError) as info:
            task.enqueue("x" * (300 * MB))
    finally:
        app.close()
    message = str(info.value)
    assert message.startswith("Postgres refused the operation: string too long"), message
    assert db.execute("SELECT count(*) FROM pgjobs.jobs").fetchone() == (0,)
    result = check(db, ids, read_runs(chaos_dir))
    assert result.succeeded == 3
    record("payloads", result, **figures, **{"300MB": "refused by Postgres (jsonb limit)"})
