"""The scheduler: every worker process runs one; only the elected leader enqueues ticks.

At start it registers the code's schedules (their defaults; operators' overrides stay).
Leadership is one session advisory lock held on the scheduler's own connection, and the
leader runs every statement over that connection: once it is gone, the lock is gone and
the old leader can write nothing more. Followers retry the lock every `leader_retry`
seconds, so a dead leader is replaced within about that long. Should two leaders ever
overlap (a partition the server has not noticed yet), the unique key on
cron_runs (schedule, tick_at) still lets each tick enqueue one job only.

The lock's key is not fixed: any role can take any advisory key, so `cron_election` keeps
the current one and the backend pid of the leader that took it. A candidate that finds the
key held by another backend moves the election to a fresh random key (and says so), so a
foreign session can neither stop the ticks nor predict the next key.

Each leader pass re-reads the schedules (so enable/disable/re-time apply within a pass),
records the outcome of finished runs, and enqueues due ticks following the schedule's
missed-ticks policy. Passes run every `interval` seconds, and sooner when a tick is due.
Ticks are due on the database's clock (read at each pass), never this host's: a leader
whose host clock is off fires neither early nor late. A test's FrozenClock drives the
passes instead (`run_once(now)`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import psycopg

from pgjobs import db
from pgjobs.clock import Clock
from pgjobs.cron.expression import check_timezone, parse
from pgjobs.cron.policy import Plan, plan_ticks
from pgjobs.cron.schedule import Missed, registration_params
from pgjobs.errors import ConfigError, PgJobsError, SchemaError
from pgjobs.worker.maintenance import Connect, Service

if TYPE_CHECKING:
    from pgjobs.app import App

log = logging.getLogger("pgjobs.cron")

PRUNE_BATCH = 10_000
MIN_PAUSE = 0.005
TICK_SLACK = 0.001  # wake just after a tick, not just before it
UNLOCK_TIMEOUT = 1.0  # closing the connection releases the lock anyway


def fresh_lock_key(schema: str) -> int:
    """A new, unpredictable key for the schema's cron leader lock: the schema's cron
    namespace in the high half (so it collides with no other pgjobs lock), random bits in
    the low half (never 0, the fixed key of workers before version 5)."""
    return (db.lock_namespace(schema, "cron") << 32) | (secrets.randbits(32) or 1)


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
        self.schema = app.schema
        self.lock_key: int | None = None  # the key of the lock held while leading
        self.register_key = db.lock_namespace(app.schema, "cron-register")
        self._probe = probe
        self.leader_retry = leader_retry
        self.retention = retention
        self.prune_interval = prune_interval
        self.identity = f"{socket.gethostname()}:{os.getpid()}"
        self.registered = False
        self.leader = False
        self.upcoming: datetime | None = None  # earliest next tick seen by the last pass
        self._pass_now: datetime | None = None  # the time of the last pass...
        self._pass_mono = 0.0  # ...and clock.monotonic() then: pauses are durations
        self._next_attempt = float("-inf")
        self._next_prune = float("-inf")
        self._reported: dict[str, int] = {}  # schedule -> revision whose error was logged

    # ------------------------------------------------------------------ lifecycle
    async def run_once(self, now: datetime | None) -> int:
        """Register (once), try to lead unless leading, and as leader enqueue the ticks due
        at `now` (None: the database's time, read now); returns the number of jobs
        enqueued."""
        if self.leader and (self._conn is None or self._conn.closed):
            self._lose_leadership()  # the lock went with the connection
        if not self.leader and not await self._campaign(now):
            return 0
        conn = self._conn
        assert conn is not None
        if now is None:
            now = await self._db_now(conn)
        self._pass_now, self._pass_mono = now, self.clock.monotonic()
        return await self._pass(conn, now)

    async def _db_now(self, conn: psycopg.AsyncConnection[Any]) -> datetime:
        row = await (await conn.execute(self.q["cron_now"])).fetchone()
        assert row is not None
        return row[0]  # type: ignore[no-any-return]

    async def loop(self) -> None:
        while True:
            try:
                await self.run_once(self.clock.db_now())
            except (psycopg.Error, PgJobsError) as exc:
                log.warning("scheduler failed, will retry: %s", exc)
                await self.close()
            await asyncio.sleep(self.pause())

    def pause(self) -> float:
        """Seconds to the next pass: the interval, or less when a tick or an attempt to
        lead falls due sooner."""
        if not self.leader:
            wait = self._next_attempt - self.clock.monotonic()
        elif self.upcoming is not None and self._pass_now is not None:
            # The time to the tick as of the pass, less the time elapsed since: a duration
            # on the database's clock, whatever this host's wall clock says.
            elapsed = self.clock.monotonic() - self._pass_mono
            wait = (self.upcoming - self._pass_now).total_seconds() - elapsed + TICK_SLACK
        else:
            wait = self.interval
        return max(MIN_PAUSE, min(self.interval, wait))

    async def close(self) -> None:
        """Stop leading and close the connection. The lock is released explicitly first, so
        that a follower can take over at once, not only once the server has noticed."""
        conn = self._conn
        if self.leader and conn is not None and not conn.closed and self.lock_key is not None:
            with contextlib.suppress(psycopg.Error, TimeoutError):
                unlock = conn.execute(self.q["cron_resign"], {"key": self.lock_key})
                await asyncio.wait_for(unlock, UNLOCK_TIMEOUT)
        self._lose_leadership()
        await super().close()

    def _lose_leadership(self) -> None:
        if self.leader:
            log.info("no longer the cron leader (%s)", self.identity)
        self.leader = False
        self.lock_key = None
        self.upcoming = None

    async def _campaign(self, now: datetime | None) -> bool:
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
        if await self._elect(self._conn):
            self.leader = True
            log.info("this process is now the cron leader (%s)", self.identity)
            return True
        if self._probe is not None:
            await super().close()  # a follower keeps no connection of its own
        return False

    async def _leader_exists(self, conn: psycopg.AsyncConnection[Any]) -> bool:
        """Whether the elected leader holds the current key (a foreign holder does not
        count)."""
        row = await (await conn.execute(self.q["cron_leader_exists"])).fetchone()
        return bool(row and row[0])

    async def _elect(self, conn: psycopg.AsyncConnection[Any]) -> bool:
        """Take the current key, or move the election away from a foreign holder of it;
        True when this connection now holds the leader lock. Candidates decide one at a
        time (the election row's lock), and a winner records its backend pid before the
        next candidate looks, so a key held by any other pid is foreign.

        A session lock taken here outlives a failed transaction: the caller closes the
        connection on any error, which releases it."""
        q = self.q
        moved_from: str | None = None
        async with conn.transaction():
            row = await (await conn.execute(q["cron_election_lock"])).fetchone()
            if row is None:
                raise SchemaError(
                    f"the row of {self.schema}.cron_election is missing: no worker can lead "
                    f"cron; restore it with INSERT INTO {self.schema}.cron_election DEFAULT VALUES"
                )
            key: int | None = row[0]
            if key is not None:
                if await self._try_lock(conn, key):
                    return await self._elected(conn, key, None)
                cur = await conn.execute(q["cron_lock_holder"], {"key": key})
                holder = await cur.fetchone()
                if holder is None or holder[1]:
                    return False  # the elected leader holds it, or it was just released
                pid, _, role, application = holder
                moved_from = f"backend pid {pid}, role {role!r}, application {application!r}"
            key = fresh_lock_key(self.schema)
            if not await self._try_lock(conn, key):  # 1 in 2**32: try again next time
                return False
            await self._elected(conn, key, moved_from)
        if moved_from is not None:
            log.warning(
                "the cron leader lock was held by a session that no pgjobs worker elected "
                "(%s); it cannot stop ticks: the election moved to a new key, led by %s",
                moved_from,
                self.identity,
            )
        return True

    async def _try_lock(self, conn: psycopg.AsyncConnection[Any], key: int) -> bool:
        row = await (await conn.execute(self.q["cron_try_lead"], {"key": key})).fetchone()
        return bool(row and row[0])

    async def _elected(
        self, conn: psycopg.AsyncConnection[Any], key: int, moved_from: str | None
    ) -> bool:
        params = {"key": key, "by": self.identity, "moved_from": moved_from}
        await conn.execute(self.q["cron_elected"], params)
        self.lock_key = key
        return True

    # --------------------------------------------------------------- registration
    async def register(self, conn: psycopg.AsyncConnection[Any], now: datetime | None) -> None:
        """Write the code's schedule defaults; mark schedules missing from it as removed.
        Armed at `now` (None: the database's now())."""
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
        params = {"now": now, "retention": self.retention, "limit": PRUNE_BATCH}
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
