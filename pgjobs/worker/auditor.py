"""Auditor: hands back jobs the database says this worker runs but the worker never got.

That happens when a claim commits but its reply is lost (the connection drops, or
shutdown cancels the claim in flight). The audit holds the claim lock, so no claim is in
flight while it compares the database with the jobs this process runs or has yet to ack.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

import psycopg

from pgjobs.clock import Clock
from pgjobs.queries import Queries
from pgjobs.worker.maintenance import Connect, Service

log = logging.getLogger("pgjobs.worker")


class Auditor(Service):
    name = "auditor"

    def __init__(
        self,
        queries: Queries,
        connect: Connect,
        clock: Clock,
        *,
        claim_lock: asyncio.Lock,
        worker_id: Callable[[], int | None],
        known: Callable[[], set[int]],
        channel: str,
        interval: float = 5.0,
    ):
        super().__init__(connect, clock, interval)
        self.q = queries
        self.claim_lock = claim_lock
        self.worker_id = worker_id
        self.known = known
        self.channel = channel

    async def work(self, conn: psycopg.AsyncConnection[Any], now: datetime | None) -> int:
        async with self.claim_lock:
            worker_id = self.worker_id()
            if worker_id is None:
                return 0
            params = {"worker_id": worker_id, "known": list(self.known()), "channel": self.channel}
            cur = await conn.execute(self.q["release_unknown_jobs"], params)
            released = [row[0] for row in await cur.fetchall()]
        if released:
            log.warning("handed back %d job(s) claimed but never received: %s", len(released),
                        released[:20])  # fmt: skip
        return len(released)
