"""Reads queue depth from the database for the worker's /metrics, every `interval` seconds."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg

from pgjobs.clock import Clock
from pgjobs.metrics import QueueDepth, QueueDepthRow
from pgjobs.queries import Queries
from pgjobs.worker.maintenance import Connect, Service

DEPTH_INTERVAL = 15.0  # one cheap query (the hot table, grouped by queue) per interval


class QueueDepthReader(Service):
    name = "queue depth reader"

    def __init__(
        self,
        queries: Queries,
        connect: Connect,
        clock: Clock,
        *,
        depth: QueueDepth,
        interval: float = DEPTH_INTERVAL,
    ):
        super().__init__(connect, clock, interval)
        self.q = queries
        self.depth = depth

    async def work(self, conn: psycopg.AsyncConnection[Any], now: datetime | None) -> int:
        cur = await conn.execute(self.q["metrics_queue_depth"])
        rows = [QueueDepthRow(*row) for row in await cur.fetchall()]
        self.depth.update(rows)
        return len(rows)
