"""The worker's one session connection: identity, liveness lock, LISTEN and heartbeat.

The worker registers under a fresh id, holds a session advisory lock on it for as long as
this connection lives, and records the connection's backend pid: rescuers trust the lock
only while that backend holds it. Rescuers treat a running job whose worker's lock has been
gone for the worker's rescue grace as orphaned. If the connection drops, the session tries,
for the first part of that grace (REATTACH_SHARE), to take the same id's lock back; the
database refuses once the grace has run out or a rescue removed the worker (reattach_worker),
and reports which jobs still run under the id, so that the handlers of any other are stopped.
A loss found after the event loop was blocked is dated from the start of the block (see
watchdog.py): a worker blocked past its reattach window never takes its session back. If it
cannot, it hands the old id to `on_fenced`, which must stop every handler of that id's jobs
before the grace is over, and registers under a new id; the old id's jobs are left to rescue.
A schema that no longer accepts this worker's PROTOCOL refuses its heartbeat: `run` raises
WorkerOutdated and the worker stops.
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
from pgjobs.worker.watchdog import LoopWatch

log = logging.getLogger("pgjobs.worker")

Connect = Callable[[], Awaitable[psycopg.AsyncConnection[Any]]]

# Of the rescue grace, the share spent trying to take the lost id back, and the share the
# worker's handlers then get to stop. The rest is margin for the rescuer noticing late.
REATTACH_SHARE = 0.4
FENCE_SHARE = 0.3
REATTACH_RETRY = 0.1
UNREGISTER_TIMEOUT = 5.0

# What this worker speaks; the schema's `compatibility.min_worker_protocol` must not exceed
# it. Raise both together when workers of the old and the new code must not run side by
# side (protocol 2: verified lock holders, acks fenced by attempt, refused reattach).
PROTOCOL = 2
OUTDATED_SQLSTATE = "PJ001"


class LockTaken(PgJobsError):
    """The lost id's lock is still held: the server has not yet noticed our old connection
    is gone (while it holds the lock, nothing of ours is rescued)."""


class ReattachRefused(PgJobsError):
    """The database no longer lets the lost id back: its grace ran out or it was rescued."""


class WorkerOutdated(PgJobsError):
    """The schema requires a newer worker protocol than this pgjobs speaks."""


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
        rescue_grace: float,
        on_notify: Callable[[str], None],
        on_connect: Callable[[], None],
        on_fenced: Callable[[int], Awaitable[None]],
        on_reattached: Callable[[int, set[int]], Awaitable[None]],
        monotonic: Callable[[], float],
    ):
        self.q = queries
        self._connect = connect
        self.lock_namespace = lock_namespace
        self.channel = channel
        self.queues = list(queues) if queues is not None else None
        self.concurrency = concurrency
        self.heartbeat_interval = heartbeat_interval
        self.rescue_grace = rescue_grace
        self.reattach_window = rescue_grace * REATTACH_SHARE
        self._on_notify = on_notify
        self._on_connect = on_connect
        self._on_fenced = on_fenced
        self._on_reattached = on_reattached
        self._monotonic = monotonic
        self.watch: LoopWatch | None = None  # set by the worker: dates losses after stalls
        self.worker_id: int | None = None
        self.ready = asyncio.Event()
        self._conn: psycopg.AsyncConnection[Any] | None = None

    def lock_key(self, worker_id: int) -> int:
        return (self.lock_namespace << 32) | worker_id

    def socket_fd(self) -> int:
        """The session connection's socket (-1 without one); read by the watchdog thread."""
        conn = self._conn
        try:
            return -1 if conn is None or conn.closed else int(conn.pgconn.socket)
        except psycopg.Error:
            return -1

    async def run(self) -> None:
        delay = 0.2
        lost_since: float | None = None  # when the session of `worker_id` was lost
        if self.worker_id is not None:  # restarted after a crash: as if the session dropped
            await self._discard()
            lost_since = self._monotonic()
        while True:
            try:
                if lost_since is None:
                    await self._open(None)
                else:
                    left = lost_since + self.reattach_window - self._monotonic()
                    await asyncio.wait_for(self._open(self.worker_id), max(left, 0.001))
                    log.warning(
                        "worker %s took its session back after %.2fs; its jobs carry on",
                        self.worker_id,
                        self._monotonic() - lost_since,
                    )
                delay = 0.2
                lost_since = None
                await self._listen()
            except psycopg.Error as exc:
                if exc.sqlstate == OUTDATED_SQLSTATE:
                    message = exc.diag.message_primary or str(exc)
                    raise WorkerOutdated(f"{message}: stopping this worker") from exc
                # Any other failure of the session (a refused heartbeat, say) is handled
                # like a lost connection: the connection, and so the lock, is dropped.
                lost_since = self._lost(lost_since, exc)
            except ReattachRefused as exc:
                log.warning("worker %s: %s", self.worker_id, exc)
                lost_since = float("-inf")  # fence now: no more tries
            except (PgJobsError, TimeoutError) as exc:
                lost_since = self._lost(lost_since, exc)
            self.ready.clear()
            await self._discard()
            if lost_since is None:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            elif self._monotonic() - lost_since < self.reattach_window:
                await asyncio.sleep(REATTACH_RETRY)
            else:
                lost, self.worker_id, lost_since = self.worker_id, None, None
                assert lost is not None
                log.error(
                    "worker %s could not take its session back within %.1fs: stopping its "
                    "handlers; its jobs will be rescued",
                    lost,
                    self.reattach_window,
                )
                await self._on_fenced(lost)

    def _lost(self, lost_since: float | None, exc: BaseException) -> float | None:
        """When the session was lost (None: it never had an id to lose)."""
        if lost_since is not None:
            return lost_since
        if self.worker_id is None:
            log.warning("cannot open the worker session: %s", exc)
            return None
        now = self._monotonic()
        since = self.watch.lost_since(now) if self.watch is not None else now
        log.warning(
            "worker %s lost its session connection%s: %s",
            self.worker_id,
            f" (the event loop was blocked for {now - since:.1f}s)" if since < now else "",
            exc,
        )
        return since

    async def _open(self, reattach: int | None) -> None:
        """Connect, lock a worker id (`reattach`, or a fresh one), register and LISTEN."""
        conn = await self._connect()
        self._conn = conn
        q = self.q
        cur = conn.cursor()
        if reattach is not None:
            if not await self._try_lock(cur, reattach):
                raise LockTaken(f"the lock of worker {reattach} is still held")
            await cur.execute(q["reattach_worker"], {"id": reattach})
            row = await cur.fetchone()
            if row is None:
                await cur.execute(q["unlock_worker"], {"key": self.lock_key(reattach)})
                raise ReattachRefused(
                    "the database refused to let it take its id back (its rescue grace ran "
                    "out, or its jobs were rescued)"
                )
            await self._on_reattached(reattach, set(row[0]))
            candidate = reattach
        else:
            candidate = await self._lock_fresh_id(cur)
            params = {
                "id": candidate,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "queues": self.queues,
                "concurrency": self.concurrency,
                "rescue_grace": self.rescue_grace,
                "namespace": self.lock_namespace,
                "protocol": PROTOCOL,
            }
            await cur.execute(q["register_worker"], params)
        await cur.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
        self.worker_id = candidate
        self.ready.set()
        if reattach is None:
            log.info("worker %s registered (pid %s)", candidate, os.getpid())
        self._on_connect()  # notifications may have been missed while disconnected

    async def _lock_fresh_id(self, cur: psycopg.AsyncCursor[Any]) -> int:
        q = self.q
        for _ in range(100):
            await cur.execute(q["reserve_worker_id"], {"sequence": q.sequence("worker_id_seq")})
            row = await cur.fetchone()
            assert row is not None
            candidate = int(row[0])
            if await self._try_lock(cur, candidate):
                return candidate
        raise PgJobsError("could not find a free worker id")  # 100 live ids in a row

    async def _try_lock(self, cur: psycopg.AsyncCursor[Any], worker_id: int) -> bool:
        await cur.execute(self.q["try_worker_lock"], {"key": self.lock_key(worker_id)})
        locked = await cur.fetchone()
        return bool(locked and locked[0])

    async def _listen(self) -> None:
        conn = self._conn
        assert conn is not None
        assert self.worker_id is not None
        while True:
            async for notify in conn.notifies(timeout=self.heartbeat_interval):
                self._on_notify(notify.payload)
            cur = await conn.execute(self.q["heartbeat"], {"id": self.worker_id})
            if await cur.fetchone() is None:
                raise ReattachRefused(f"the row of worker {self.worker_id} was removed")

    async def _discard(self) -> None:
        conn, self._conn = self._conn, None
        await db.close_quietly(conn)

    async def close(self, *, unregister: bool) -> None:
        """End the session; with `unregister`, drop the worker row and its lock first."""
        worker_id = self.worker_id
        self.ready.clear()
        if unregister and worker_id is not None:
            await self._unregister(worker_id)
        await self._discard()

    async def _unregister(self, worker_id: int) -> None:
        conn = self._conn
        params = {"id": worker_id, "key": self.lock_key(worker_id)}
        try:
            if conn is not None and not conn.closed:
                await conn.execute(self.q["unregister_worker"], params)
                return
        except psycopg.Error as exc:
            log.debug("unregistering on the session connection failed: %s", exc)
        # Stopping while the session is lost: its lock went with it, only the row is left.
        try:
            fresh = await asyncio.wait_for(self._connect(), UNREGISTER_TIMEOUT)
            async with fresh:
                await fresh.execute(self.q["forget_worker"], params)
        except (psycopg.Error, PgJobsError, TimeoutError) as exc:
            log.warning("could not unregister worker %s: %s", worker_id, exc)
