"""Shared loop for maintenance services: run_once(now) every interval, survive outages.

The loop passes `clock.db_now()`: None in production, so the services' queries use the
database's now() (`coalesce(%(now)s, now())`) for anything other workers must agree on;
a FrozenClock's time in tests.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import psycopg

from pgjobs import db
from pgjobs.clock import Clock
from pgjobs.errors import PgJobsError

log = logging.getLogger("pgjobs.worker")

Connect = Callable[[], Awaitable[psycopg.AsyncConnection[Any]]]


class SharedConnection:
    """One connection for all maintenance services of a worker (psycopg serialises their
    statements), opened on first use and reopened after it breaks."""

    def __init__(self, connect: Connect):
        self._connect = connect
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> psycopg.AsyncConnection[Any]:
        async with self._lock:
            if self._conn is None or self._conn.closed:
                self._conn = await self._connect()
            return self._conn


class Service:
    """A maintenance service: subclasses implement `work(conn, now)`; `now` None means
    the database's now()."""

    name = "service"

    def __init__(self, connect: Connect, clock: Clock, interval: float):
        self._connect = connect
        self.clock = clock
        self.interval = interval
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def run_once(self, now: datetime | None) -> int:
        """One pass at time `now` (None: the database's now()); returns how many rows it
        changed."""
        if self._conn is None or self._conn.closed:
            self._conn = await self._connect()
        return await self.work(self._conn, now)

    async def work(self, conn: psycopg.AsyncConnection[Any], now: datetime | None) -> int:
        raise NotImplementedError

    async def loop(self) -> None:
        while True:
            try:
                await self.run_once(self.clock.db_now())
            except (psycopg.Error, PgJobsError) as exc:
                log.warning("%s failed, will retry: %s", self.name, exc)
                await self.close()
            await asyncio.sleep(self.pause())

    def pause(self) -> float:
        """Seconds until the next pass."""
        return self.interval

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        await db.close_quietly(conn)
