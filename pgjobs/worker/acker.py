"""Writes job outcomes back in batches: one pipelined round trip per flush.

Batching is natural rather than timed: while one flush is in flight, new outcomes gather
and go together in the next. Every statement matches on (id, worker_id, state='running'),
so replaying a batch after a lost connection is harmless.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg

from pgjobs import db
from pgjobs.errors import PgJobsError
from pgjobs.queries import Queries
from pgjobs.worker.outcome import Kind, Outcome

log = logging.getLogger("pgjobs.worker")

Connect = Callable[[], Awaitable[psycopg.AsyncConnection[Any]]]


class Acker:
    def __init__(self, queries: Queries, connect: Connect, channel: str):
        self.q = queries
        self._connect = connect
        self._channel = channel
        self._pending: list[Outcome] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self.unacked: set[int] = set()  # ids whose outcome is not written yet

    def submit(self, outcome: Outcome) -> None:
        self.unacked.add(outcome.job.id)
        self._pending.append(outcome)
        self._idle.clear()
        self._wake.set()

    async def flushed(self) -> None:
        """Wait until everything submitted so far is written."""
        await self._idle.wait()

    async def run(self) -> None:
        delay = 0.1
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, []
            while batch:
                try:
                    if self._conn is None or self._conn.closed:
                        self._conn = await self._connect()
                    await self._write(self._conn, batch)
                    self.unacked.difference_update(outcome.job.id for outcome in batch)
                    batch = []
                    delay = 0.1
                except (psycopg.OperationalError, PgJobsError) as exc:
                    log.warning(
                        "acking %d job(s) failed, retrying in %.1fs: %s", len(batch), delay, exc
                    )
                    await self.close()
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                except psycopg.Error as exc:  # the data, not the connection: isolate the culprit
                    log.error("acking %d job(s) failed, acking one by one: %s", len(batch), exc)
                    await self._write_one_by_one(batch)
                    batch = []
            if not self._pending:
                self._idle.set()

    async def _write_one_by_one(self, batch: list[Outcome]) -> None:
        for outcome in batch:
            try:
                assert self._conn is not None
                await self._write(self._conn, [outcome])
                self.unacked.discard(outcome.job.id)
            except psycopg.OperationalError:
                self.submit(outcome)  # connection trouble after all: back to the retry path
            except psycopg.Error as exc:  # stays in `unacked`: the job is left to rescue
                log.error(
                    "cannot record the outcome of job %s (%s); it stays running until this "
                    "worker exits, then it is rescued: %s",
                    outcome.job.id,
                    outcome.kind.value,
                    exc,
                )

    async def _write(self, conn: psycopg.AsyncConnection[Any], batch: list[Outcome]) -> None:
        succeeded: dict[int, list[int]] = defaultdict(list)
        retried: dict[int, tuple[list[int], list[float], list[str | None]]] = defaultdict(
            lambda: ([], [], [])
        )
        dead: dict[int, tuple[list[int], list[str | None]]] = defaultdict(lambda: ([], []))
        released: dict[int, list[int]] = defaultdict(list)
        for outcome in batch:
            job = outcome.job
            if outcome.kind is Kind.SUCCEEDED:
                succeeded[job.worker_id].append(job.id)
            elif outcome.kind is Kind.RETRY:
                ids, delays, errors = retried[job.worker_id]
                ids.append(job.id)
                delays.append(outcome.delay)
                errors.append(outcome.error)
            elif outcome.kind is Kind.DEAD:
                dead_ids, dead_errors = dead[job.worker_id]
                dead_ids.append(job.id)
                dead_errors.append(outcome.error)
            else:
                released[job.worker_id].append(job.id)
        q = self.q
        async with conn.pipeline(), conn.cursor() as cur:
            for worker_id, ids in succeeded.items():
                await cur.execute(q["complete_jobs"], {"ids": ids, "worker_id": worker_id})
            for worker_id, (ids, delays, errors) in retried.items():
                params = {"ids": ids, "delays": delays, "errors": errors, "worker_id": worker_id}
                await cur.execute(q["retry_jobs"], params)
            for worker_id, (ids, errors) in dead.items():
                params = {"ids": ids, "errors": errors, "worker_id": worker_id}
                await cur.execute(q["bury_jobs"], params)
            for worker_id, ids in released.items():
                params = {"ids": ids, "worker_id": worker_id, "channel": self._channel}
                await cur.execute(q["release_jobs"], params)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        await db.close_quietly(conn)
