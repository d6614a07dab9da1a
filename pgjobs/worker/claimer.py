"""Claims batches of jobs: one `FOR UPDATE SKIP LOCKED` round trip per batch."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import psycopg
from psycopg.rows import tuple_row

from pgjobs import db
from pgjobs.clock import Clock
from pgjobs.job import Job, job_from_row
from pgjobs.queries import Queries

Connect = Callable[[], Awaitable[psycopg.AsyncConnection[Any]]]

# How often the list of claimable (existing, unpaused) queues is re-read.
QUEUE_REFRESH = 1.0


class Claimer:
    """Owns the claim connection and the list of queues worth claiming from."""

    def __init__(
        self, queries: Queries, connect: Connect, clock: Clock, wanted: Sequence[str] | None
    ):
        self.q = queries
        self._connect = connect
        self.clock = clock
        self.wanted = list(wanted) if wanted is not None else None
        self.queues: list[str] = []  # wanted queues that exist and are not paused
        self._stale = True
        self._refreshed_at = float("-inf")
        self._conn: psycopg.AsyncConnection[Any] | None = None

    def notified(self, queue: str) -> bool:
        """A NOTIFY for `queue` arrived; True if this worker serves that queue."""
        if self.wanted is not None and queue not in self.wanted:
            return False
        if queue not in self.queues:
            self._stale = True  # new to us, or paused when last read
        return True

    def mark_stale(self) -> None:
        self._stale = True

    async def claim(self, worker_id: int, limit: int) -> list[Job]:
        """Claim up to `limit` eligible jobs for `worker_id` (raises on database errors)."""
        if self._conn is None or self._conn.closed:
            self._conn = await self._connect()
            db.use_fast_json(self._conn)
        cur = self._conn.cursor(row_factory=tuple_row)
        now = self.clock.monotonic()
        if self._stale or now - self._refreshed_at >= QUEUE_REFRESH:
            self._stale = False
            await cur.execute(self.q["active_queues"], {"queues": self.wanted})
            self.queues = [row[0] for row in await cur.fetchall()]
            self._refreshed_at = now
        if not self.queues:
            return []
        params = {"queues": self.queues, "limit": limit, "worker_id": worker_id}
        await cur.execute(self.q["claim_jobs"], params)
        return [job_from_row(row, worker_id) for row in await cur.fetchall()]

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        await db.close_quietly(conn)
