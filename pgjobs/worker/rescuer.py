"""Rescuer: puts back the running jobs of workers whose liveness lock has been gone for
longer than their rescue grace (see the rescue_jobs query and worker/session.py)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import psycopg

from pgjobs.clock import Clock
from pgjobs.queries import Queries
from pgjobs.worker.maintenance import Connect, Service

log = logging.getLogger("pgjobs.worker")


class Rescuer(Service):
    name = "rescuer"

    def __init__(
        self,
        queries: Queries,
        connect: Connect,
        clock: Clock,
        *,
        lock_namespace: int,
        channel: str,
        interval: float = 1.0,
    ):
        super().__init__(connect, clock, interval)
        self.q = queries
        self.params = {"namespace": lock_namespace, "channel": channel}

    async def work(self, conn: psycopg.AsyncConnection[Any], now: datetime | None) -> int:
        cur = await conn.execute(self.q["rescue_jobs"], self.params)
        rescued = [row[0] for row in await cur.fetchall()]
        if rescued:
            log.warning("rescued %d job(s) of lost workers: %s", len(rescued), rescued[:20])
        return len(rescued)
