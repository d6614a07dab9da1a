"""The App that the process tests run with `pgjobs worker procapp:app`.

Its DSN comes from PGJOBS_DSN. Every run of `proc.record` / `proc.record_async` is written to
the user table `runs` (see RUNS_TABLE) over the handler's own connection: a row when the
handler starts, `finished_at` when it returns normally. For its whole duration the handler
holds `pg_try_advisory_lock(PROBE_NAMESPACE, job_id)`; `locked = false` in its row means
another run of the same job held the lock at that moment, i.e. one job ran twice at once.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

from psycopg_pool import AsyncConnectionPool, ConnectionPool

import pgjobs

app = pgjobs.App()

RECORD = "proc.record"
RECORD_ASYNC = "proc.record_async"
PROBE_NAMESPACE = 4242  # two-int advisory locks: never collide with pgjobs' bigint locks
POOL_SIZE = 6  # per worker process; handlers beyond that wait for a connection

RUNS_TABLE = """
CREATE TABLE runs (
    run_id      bigserial PRIMARY KEY,
    job_id      bigint NOT NULL,
    attempt     int NOT NULL,
    pid         int NOT NULL,
    worker_id   bigint NOT NULL,
    locked      boolean NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at timestamptz
)
"""

_START = """
INSERT INTO runs (job_id, attempt, pid, worker_id, locked)
VALUES (%(job)s, %(attempt)s, %(pid)s, %(worker)s, pg_try_advisory_lock(%(ns)s, %(job)s::int))
RETURNING run_id, locked
"""
_FINISH = "UPDATE runs SET finished_at = clock_timestamp() WHERE run_id = %(run)s"
_UNLOCK = "SELECT pg_advisory_unlock(%(ns)s, %(job)s::int)"


class _Pools:
    """This process's connection pools, opened on first use (after the worker started)."""

    lock = threading.Lock()
    sync: ConnectionPool | None = None
    asynchronous: AsyncConnectionPool | None = None


def _sync_pool() -> ConnectionPool:
    with _Pools.lock:
        if _Pools.sync is None:
            _Pools.sync = ConnectionPool(
                os.environ["PGJOBS_DSN"],
                min_size=1,
                max_size=POOL_SIZE,
                kwargs={"autocommit": True},
                open=True,
            )
        return _Pools.sync


async def _get_async_pool() -> AsyncConnectionPool:
    if _Pools.asynchronous is None:
        pool = AsyncConnectionPool(
            os.environ["PGJOBS_DSN"],
            min_size=1,
            max_size=POOL_SIZE,
            kwargs={"autocommit": True},
            open=False,
        )
        await pool.open()
        _Pools.asynchronous = pool
    return _Pools.asynchronous


def _params() -> dict[str, Any]:
    job = pgjobs.current_job()
    return {
        "job": job.id,
        "attempt": job.attempt,
        "pid": os.getpid(),
        "worker": job.worker_id,
        "ns": PROBE_NAMESPACE,
    }


@app.task(name=RECORD)
def record(sleep: float = 0.0) -> None:
    """Record this run, sleep `sleep` seconds holding the probe lock, record the finish."""
    params = _params()
    with _sync_pool().connection() as conn:
        row = conn.execute(_START, params).fetchone()
        assert row is not None
        run_id, locked = row
        try:
            if sleep:
                time.sleep(sleep)
            conn.execute(_FINISH, {"run": run_id})
        finally:
            if locked:
                conn.execute(_UNLOCK, params)


@app.task(name=RECORD_ASYNC)
async def record_async(sleep: float = 0.0) -> None:
    """`record` for the event loop: cancellation (shutdown hand-back) leaves finished_at NULL."""
    params = _params()
    async with (await _get_async_pool()).connection() as conn:
        cur = await conn.execute(_START, params)
        row = await cur.fetchone()
        assert row is not None
        run_id, locked = row
        try:
            if sleep:
                await asyncio.sleep(sleep)
            await conn.execute(_FINISH, {"run": run_id})
        finally:
            if locked:
                await conn.execute(_UNLOCK, params)
