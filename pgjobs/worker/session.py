"""The worker's one session connection: identity, liveness lock, LISTEN and heartbeat.

The worker registers under a fresh id and holds a session advisory lock on it for as long
as this connection lives. Rescuers treat a running job whose worker's lock is gone as
orphaned. If the connection drops, the lock is gone with it, so the session comes back
under a new id and the jobs claimed under the old id are left to rescue.
This connection must be direct or go through a session-mode pooler (not transaction mode).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import psycopg
from psycopg import sql

from pgjobs import db
from pgjobs.errors import PgJobsError
from pgjobs.queries import Queries

log = logging.getLogger("pgjobs.worker")

Connect = Callable[[], Awaitable[psycopg.AsyncConnection[Any]]]


class Session:
    def __init__(
        self,
        queries: Queries,
        connect: Connect,
        *,
        lock_namespace: int,
        channel: str,
        queues: Sequence[str] | None,
        concurrency: int,
        heartbeat_interval: float,
        on_notify: Callable[[str], None],
        on_connect: Callable[[], None],
    ):
        self.q = queries
        self._connect = connect
        self.lock_namespace = lock_namespace
        self.channel = channel
        self.queues = list(queues) if queues is not None else None
        self.concurrency = concurrency
        self.heartbeat_interval = heartbeat_interval
        self._on_notify = on_notify
        self._on_connect = on_connect
        self.worker_id: int | None = None
        self.ready = asyncio.Event()
        self._conn: psycopg.AsyncConnection[Any] | None = None

    def lock_key(self, worker_id: int) -> int:
        return (self.lock_namespace << 32) | worker_id

    async def run(self) -> None:
        delay = 0.2
        while True:
            try:
                await self._open()
                delay = 0.2
                await self._listen()
            except (psycopg.OperationalError, PgJobsError) as exc:
                if self.worker_id is not None:
                    log.warning("worker %s lost its session connection: %s", self.worker_id, exc)
                else:
                    log.warning("cannot open the worker session, retrying in %.1fs: %s", delay, exc)
            self.ready.clear()
            self.worker_id = None
            await self._discard()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _open(self) -> None:
        conn = await self._connect()
        self._conn = conn
        q = self.q
        cur = conn.cursor()
        for _ in range(100):
            await cur.execute(q["reserve_worker_id"], {"sequence": q.sequence("worker_id_seq")})
            row = await cur.fetchone()
            assert row is not None
            candidate = int(row[0])
            await cur.execute(q["try_worker_lock"], {"key": self.lock_key(candidate)})
            locked = await cur.fetchone()
            if locked and locked[0]:
                break
        else:  # pragma: no cover - would need 100 live workers on consecutive ids
            raise PgJobsError("could not find a free worker id")
        params = {
            "id": candidate,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "queues": self.queues,
            "concurrency": self.concurrency,
        }
        await cur.execute(q["register_worker"], params)
        await cur.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
        self.worker_id = candidate
        self.ready.set()
        log.info("worker %s registered (pid %s)", candidate, os.getpid())
        self._on_connect()  # notifications may have been missed while disconnected

    async def _listen(self) -> None:
        conn = self._conn
        assert conn is not None
        assert self.worker_id is not None
        while True:
            async for notify in conn.notifies(timeout=self.heartbeat_interval):
                self._on_notify(notify.payload)
            await conn.execute(self.q["heartbeat"], {"id": self.worker_id})

    async def _discard(self) -> None:
        conn, self._conn = self._conn, None
        await db.close_quietly(conn)

    async def close(self, *, unregister: bool) -> None:
        """End the session; with `unregister`, drop the worker row and its lock first."""
        conn, worker_id = self._conn, self.worker_id
        self.ready.clear()
        if unregister and conn is not None and worker_id is not None and not conn.closed:
            try:
                await conn.execute(
                    self.q["unregister_worker"], {"id": worker_id, "key": self.lock_key(worker_id)}
                )
            except psycopg.Error as exc:
                log.warning("could not unregister worker %s: %s", worker_id, exc)
        await self._discard()
