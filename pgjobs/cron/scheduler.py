"""The scheduler: every worker process runs one; only the elected leader enqueues ticks.

At start it registers the code's schedules (their defaults; operators' overrides stay).
Leadership is one session advisory lock held on the scheduler's own connection, and the
leader runs every statement over that connection: once it is gone, the lock is gone and
the old leader can write nothing more. Followers retry the lock every `leader_retry`
seconds, so a dead leader is replaced within about that long. Should two leaders ever
overlap (a partition the server has not noticed yet), the unique key on
cron_runs (schedule, tick_at) still lets each tick enqueue one job only.

Each leader pass re-reads the schedules (so enable/disable/re-time apply within a pass),
records the outcome of finished runs, and enqueues due ticks following the schedule's
missed-ticks policy. Passes run every `interval` seconds, and sooner when a tick is due.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import psycopg

from pgjobs import db
from pgjobs.clock import Clock
from pgjobs.cron.expression import check_timezone, parse
from pgjobs.cron.policy import Plan, plan_ticks
from pgjobs.cron.schedule import Missed, registration_params
from pgjobs.errors import ConfigError, PgJobsError
from pgjobs.worker.maintenance import Connect, Service

if TYPE_CHECKING:
    from pgjobs.app import App

log = logging.getLogger("pgjobs.cron")

PRUNE_BATCH = 10_000
MIN_PAUSE = 0.005
TICK_SLACK = 0.001  # wake just after a tick, not just before it
UNLOCK_TIMEOUT = 1.0  # closing the connection releases the lock anyway


def leader_lock_key(schema: str) -> int:
    """The session advisory lock whose holder is the schema's cron leader."""
    return db.lock_namespace(schema, "cron") << 32


class Scheduler(Service):
    """Registers the app's schedules, competes for leadership and, as leader, enqueues ticks.

    `connect` opens the scheduler's own connection, on which a leader holds its lock. With
    `probe` (a connection shared with other services), a follower only checks there that
    some leader holds the lock, and opens a connection of its own just to try to take over
    (and at start, to register): followers then cost no connection of their own.
    """

    name = "scheduler"

    def __init__(
        self,
        app: App,
        connect: Connect,
        clock: Clock,
        *,
        probe: Connect | None = None,
        interval: float = 1.0,
        leader_retry: float = 2.0,
        retention: timedelta = timedelta(days=90),
        prune_interval: float = 60.0,
    ):
        super().__init__(connect, clock, interval)
        self.q = app.database.queries
        self.schedules = list(app.schedules.values())
        self.lock_key = leader_lock_key(app.schema)
        self.register_key = db.lock_namespace(app.schema, "cron-register")
        self._probe = probe
        self.leader_retry = leader_retry
        self.retention = retention
        self.prune_interval = prune_interval
        self.identity = f"{socket.gethostname()}:{os.getpid()}"
        self.registered = False
        self.leader = False
        self.upcoming: datetime | None = None  # earliest next tick seen by the last pass
        self._next_attempt = float("-inf")
        self._next_prune = float("-inf")
        self._reported: dict[str, int] = {}  # schedule -> revision whose error was logged

    # ------------------------------------------------------------------ lifecycle
    async def run_once(self, now: datetime) -> int:
        """Register (once), try to lead unless leading, and as leader enqueue the ticks due
        at `now`; returns the number of jobs enqueued."""
        if self.leader and (self._conn is None or self._conn.closed):
            self._lose_leadership()  # the lock went with the connection
        if not self.leader and not await self._campaign(now):
            return 0
        assert self._conn is not None
        return await self._pass(self._conn, now)

    async def loop(self) -> None:
        while True:
            try:
                await self.run_once(self.clock.now())
            except (psycopg.Error, PgJobsError) as exc:
                log.warning("scheduler failed, will retry: %s", exc)
                await self.close()
            await asyncio.sleep(self.pause())

    def pause(self) -> float:
        """Seconds to the next pass: the interval, or less when a tick or an attempt to
        lead falls due sooner."""
        if not self.leader:
            wait = self._next_attempt - self.clock.monotonic()
        elif self.upcoming is not None:
            wait = (self.upcoming - self.clock.now()).total_seconds() + TICK_SLACK
        else:
            wait = self.interval
        return max(MIN_PAUSE, min(self.interval, wait))

    async def close(self) -> None:
        """Stop leading and close the connection. The lock is released explicitly first, so
        that a follower can take over at once, not only once the server has noticed."""
        conn = self._conn
        if self.leader and conn is not None and not conn.closed:
            with contextlib.suppress(psycopg.Error, TimeoutError):
                unlock = conn.execute(self.q["cron_unlock"], {"key": self.lock_key})
                await asyncio.wait_for(unlock, UNLOCK_TIMEOUT)
        self._lose_leadership()
        await super().close()

    def _lose_leadership(self) -> None:
        if self.leader:
            log.info("no longer the cron leader (%s)", self.identity)
        self.leader = False
        self.upcoming = None

    async def _campaign(self, now: datetime) -> bool:
        """Register if not done yet, and try to take the leader lock when it is time."""
        if self.registered and self.clock.monotonic() < self._next_attempt:
            return False
        self._next_attempt = self.clock.monotonic() + self.leader_retry
        probe = self._probe if self.registered else None
        if probe is not None and await self._leader_exists(await probe()):
            return False
        if self._conn is None or self._conn.closed:
            self._conn = await self._connect()
        if not self.registered:
            await self.register(self._conn, now)
        cur = await self._conn.execute(self.q["cron_try_lead"], {"key": self.lock_key})
        row = await cur.fetchone()
        if row and row[0]:
            self.leader = True
            log.info("this process is now the cron leader (%s)", self.identity)
            return True
        if self._probe is not None:
            await super().close()  # a follower keeps no connection of its own
        return False

    async def _leader_exists(self, conn: psycopg.AsyncConnection[Any]) -> bool:
        params = {"namespace": self.lock_key >> 32, "objid": self.lock_key & 0xFFFFFFFF}
        cur = await conn.execute(self.q["cron_leader_exists"], params)
        row = await cur.fetchone()
        return bool(row and row[0])

    # --------------------------------------------------------------- registration
    async def register(self, conn: psycopg.AsyncConnection[Any], now: datetime) -> None:
        """Write the code's schedule defaults; mark schedules missing from it as removed."""
        q = self.q
        params: dict[str, Any] = {**registration_params(self.schedules), "now": now}
        async with conn.transaction():
            await conn.execute(q["cron_register_lock"], {"key": self.register_key})
            rows: list[tuple[Any, ...]] = []
            if self.schedules:
                rows = await (await conn.execute(q["cron_register"], params)).fetchall()
            cur = await conn.execute(q["cron_mark_removed"], {"names": params["names"], "now": now})
            removed = sorted(row[0] for row in await cur.fetchall())
        self.registered = True
        for name, enabled, expression, timezone, code_expression, code_timezone in rows:
            if (expression, timezone) != (code_expression, code_timezone):
                log.info(
                    "schedule %s: an operator's timing %r (%s) overrides the code's %r (%s)",
                    name,
                    expression,
                    timezone,
                    code_expression,
                    code_timezone,
                )
            if not enabled:
                log.info("schedule %s is disabled by an operator", name)
        if removed:
            log.warning(
                "schedule(s) no longer in code, kept but not firing: %s", ", ".join(removed)
            )

    # ----------------------------------------------------------------- leading
    async def _pass(self, conn: psycopg.AsyncConnection[Any], now: datetime) -> int:
        q = self.q
        await conn.execute(q["cron_record_outcomes"])
        rows = await (await conn.execute(q["cron_active_schedules"])).fetchall()
        enqueued = 0
        upcoming: datetime | None = None
        for name, expression, timezone, missed, revision, armed_at, stored_next in rows:
            try:
                parsed = parse(expression)
                check_timezone(timezone)
                next_tick = stored_next or parsed.next_after(armed_at, timezone)
                plan = plan_ticks(parsed, timezone, next_tick, now, Missed(missed))
            except (ConfigError, ValueError, OverflowError) as exc:  # one bad row, not the pass
                self._report(name, revision, exc)
                continue
            if plan.ticks or plan.next_tick != stored_next:
                enqueued += await self._fire(conn, name, revision, plan, now)
            upcoming = plan.next_tick if upcoming is None else min(upcoming, plan.next_tick)
        self.upcoming = upcoming
        if self.clock.monotonic() >= self._next_prune:
            self._next_prune = self.clock.monotonic() + self.prune_interval
            await self._prune(conn, now)
        return enqueued

    async def _fire(
        self,
        conn: psycopg.AsyncConnection[Any],
        name: str,
        revision: int,
        plan: Plan,
        now: datetime,
    ) -> int:
        params = {
            "now": now,
            "name": name,
            "revision": revision,
            "sequence": self.q.sequence("job_id_seq"),
            "by": self.identity,
            "ticks": list(plan.ticks),
            "next_tick": plan.next_tick,
            "last_tick": plan.ticks[-1] if plan.ticks else None,
        }
        cur = await conn.execute(self.q["cron_fire"], params)
        row = await cur.fetchone()
        assert row is not None
        advanced, job_ids = row
        if not advanced:
            log.debug("schedule %s changed during the pass; it is read again next pass", name)
            return 0
        if plan.dropped:
            log.warning("schedule %s: %d missed tick(s) not enqueued", name, plan.dropped)
        if len(job_ids) < len(plan.ticks):
            log.info(
                "schedule %s: %d tick(s) were enqueued already (by an overlapping leader)",
                name,
                len(plan.ticks) - len(job_ids),
            )
        if job_ids:
            log.debug("schedule %s: enqueued job(s) %s", name, job_ids)
        return len(job_ids)

    async def _prune(self, conn: psycopg.AsyncConnection[Any], now: datetime) -> None:
        params = {"before": now - self.retention, "limit": PRUNE_BATCH}
        total = 0
        while True:  # small batches keep each transaction short
            cur = await conn.execute(self.q["cron_prune_runs"], params)
            total += cur.rowcount
            if cur.rowcount < PRUNE_BATCH:
                break
        if total:
            log.info("pruned %d schedule run(s) from cron_runs", total)

    def _report(self, name: str, revision: int, exc: Exception) -> None:
        """Log a schedule the leader cannot evaluate, once per revision; others go on."""
        if self._reported.get(name) != revision:
            self._reported[name] = revision
            log.error("schedule %s is not fired: %s", name, exc)
