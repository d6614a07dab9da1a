"""Writes job outcomes back in batches: one pipelined round trip per flush.

Batching is natural rather than timed: while one flush is in flight, new outcomes gather
and go together in the next. Every statement matches on (id, worker_id, state='running'),
the failures on the attempt too, so replaying a batch after a lost connection is harmless,
and the outcome of a run that was rescued meanwhile changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg

from pgjobs import db
from pgjobs.errors import PgJobsError
from pgjobs.queries import Queries
from pgjobs.worker.outcome import Kind, Outcome

log = logging.getLogger("pgjobs.worker")

Connect = Callable[[], Awaitable[psycopg.AsyncConnection[Any]]]


_QUERY = {
    Kind.SUCCEEDED: "complete_jobs",
    Kind.RETRY: "retry_jobs",
    Kind.DEAD: "bury_jobs",
    Kind.RELEASED: "release_jobs",
}


def _columns(kind: Kind) -> dict[str, list[Any]]:
    """The per-row arrays `kind`'s statement takes (a success matches no attempt)."""
    columns: dict[str, list[Any]] = {"ids": []}
    if kind is not Kind.SUCCEEDED:
        columns["attempts"] = []
    if kind is Kind.RETRY:
        columns["delays"] = []
    if kind in (Kind.RETRY, Kind.DEAD):
        columns["errors"] = []
    return columns


class Acker:
    def __init__(
        self, queries: Queries, connect: Connect, channel: str, on_written: Callable[[], None]
    ):
        self.q = queries
        self._on_written = on_written
        self._connect = connect
        self._channel = channel
        self._pending: list[Outcome] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self.unacked: set[int] = set()  # ids whose outcome is not written yet
        self.starved = False  # the last write found no connection to be had
        self._retry = asyncio.Event()

    def submit(self, outcome: Outcome) -> None:
        self.unacked.add(outcome.job.id)
        self._pending.append(outcome)
        self._idle.clear()
        self._wake.set()

    def retry_now(self) -> None:
        """Cut a retry's backoff short: a connection was just freed for the acker."""
        self._retry.set()

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
                    self.starved = False
                    self._on_written()
                    batch = []
                    delay = 0.1
                except (psycopg.OperationalError, PgJobsError) as exc:
                    shortage = db.connection_shortage(exc)
                    self.starved = shortage is not None
                    if shortage:
                        log.error(
                            "short of Postgres connections (%s): cannot write %d job "
                            "outcome(s); claiming pauses while they wait; retrying in %.1fs",
                            shortage,
                            len(self.unacked),
                            delay,
                        )
                    else:
                        log.warning(
                            "acking %d job(s) failed, retrying in %.1fs: %s", len(batch), delay, exc
                        )
                    await self.close()
                    self._retry.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):  # or sooner: retry_now()
                            await self._retry.wait()
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
        # One statement per (kind, worker id).
        groups: dict[tuple[Kind, int], dict[str, list[Any]]] = {}
        for outcome in batch:
            job = outcome.job
            group = groups.get((outcome.kind, job.worker_id))
            if group is None:
                group = groups[outcome.kind, job.worker_id] = _columns(outcome.kind)
            group["ids"].append(job.id)
            if outcome.kind is not Kind.SUCCEEDED:
                group["attempts"].append(job.attempt)
            if outcome.kind is Kind.RETRY:
                group["delays"].append(outcome.delay)
            if outcome.kind in (Kind.RETRY, Kind.DEAD):
                group["errors"].append(outcome.error)
        async with conn.pipeline(), conn.cursor() as cur:
            for (kind, worker_id), columns in groups.items():
                params: dict[str, Any] = {**columns, "worker_id": worker_id}
                if kind is Kind.RELEASED:
                    params["channel"] = self._channel
                await cur.execute(self.q[_QUERY[kind]], params)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        await db.close_quietly(conn)
