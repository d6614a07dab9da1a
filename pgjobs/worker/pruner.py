"""Pruner: deletes finished jobs from job_history once past their retention.

Age is measured on the database's clock (`now` None): a worker whose host clock runs ahead
must not delete history that other workers, and operators, still count as recent."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import psycopg

from pgjobs.clock import Clock
from pgjobs.queries import Queries
from pgjobs.worker.maintenance import Connect, Service

log = logging.getLogger("pgjobs.worker")

BATCH = 10_000
BACKLOG_PAUSE = 0.5


class Pruner(Service):
    name = "pruner"

    def __init__(
        self,
        queries: Queries,
        connect: Connect,
        clock: Clock,
        *,
        retention: timedelta,
        dead_retention: timedelta,
        interval: float = 60.0,
    ):
        super().__init__(connect, clock, interval)
        self.q = queries
        self.backlog = False
        self.rules = [
            (retention, ["succeeded", "cancelled"]),
            (dead_retention, ["dead"]),
        ]

    async def work(self, conn: psycopg.AsyncConnection[Any], now: datetime | None) -> int:
        # One batch per rule and pass: the connection is shared with the rescuer, which must
        # not wait behind a long purge. A backlog is worked off by passes in quick succession.
        total = 0
        self.backlog = False
        for retention, states in self.rules:
            params = {"now": now, "retention": retention, "states": states, "limit": BATCH}
            cur = await conn.execute(self.q["prune_history"], params)
            total += cur.rowcount
            self.backlog |= cur.rowcount >= BATCH
        if total:
            log.info("pruned %d finished job(s) from history", total)
        return total

    def pause(self) -> float:
        return BACKLOG_PAUSE if self.backlog else self.interval
