"""The cron election against foreign sessions: a session that no worker elected (any role,
even one with no rights in the schema) takes the leader's advisory key; ticks go on, and
the leader says who held it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from worker_harness import running_worker, sync_check, until

import pgjobs
from pgjobs import db as pgdb
from pgjobs.cron import CronAdmin
from pgjobs.cron.scheduler import Scheduler
from pgjobs.worker import WorkerConfig

NOW = datetime(2031, 3, 14, 12, 0, tzinfo=UTC)
Conn = psycopg.Connection[Any]


def noop() -> None:
    pass


@pytest.fixture
def stranger(dsn: str, db: Conn) -> Iterator[str]:
    """The DSN of a login role with no rights at all in the schema (less than a producer):
    taking advisory locks needs none."""
    role = f"stranger_{os.getpid()}_{secrets.token_hex(3)}"
    db.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    params = conninfo_to_dict(dsn)
    params.update(user=role, application_name="spoofer")
    params.pop("password", None)
    try:
        yield make_conninfo("", **params)
    finally:
        db.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def held_key(conn: Conn, pid: int) -> int:
    """The advisory key a backend holds, as any role reads it from pg_locks."""
    row = conn.execute(
        "SELECT (classid::bigint << 32) | objid::bigint FROM pg_locks"
        " WHERE locktype = 'advisory' AND granted AND objsubid = 1 AND pid = %s",
        (pid,),
    ).fetchone()
    assert row is not None, f"backend {pid} holds no advisory lock"
    return int(row[0])


def make_scheduler(app: pgjobs.App, clock: pgjobs.Clock, **options: Any) -> Scheduler:
    return Scheduler(app, lambda: pgdb.connect_async(app.database.dsn), clock, **options)


@pytest.mark.timeout(60)
def test_a_foreign_holder_of_the_leader_key_cannot_stop_ticks(
    app: pgjobs.App, db: Conn, stranger: str, caplog: pytest.LogCaptureFixture
) -> None:
    clock = pgjobs.FrozenClock(NOW)
    app.every(timedelta(seconds=10), name="often")(noop)
    caplog.set_level(logging.INFO, logger="pgjobs.cron")

    async def main() -> None:
        shared = await pgdb.connect_async(app.database.dsn)

        async def probe() -> psycopg.AsyncConnection[Any]:
            return shared

        first = make_scheduler(app, clock)
        second = make_scheduler(app, clock, probe=probe)
        third = make_scheduler(app, clock, probe=probe)
        try:
            with psycopg.connect(stranger, autocommit=True) as spoof:
                assert await first.run_once(NOW) == 0
                assert first.leader
                assert first._conn is not None
                key = held_key(spoof, first._conn.info.backend_pid)  # visible to anyone
                await first.close()  # a deploy: the leader stops; the stranger grabs the key
                taken = spoof.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
                assert taken == (True,)

                clock.advance(10)
                assert await second.run_once(clock.now()) == 1  # a tick, despite the stranger
                assert second.leader
                assert second.lock_key != key

                # The new leader is trusted: another candidate neither leads nor moves it.
                assert await third.run_once(clock.now()) == 0
                assert not third.leader
                clock.advance(10)
                assert await second.run_once(clock.now()) == 1

                # The stranger cannot read the election (the next key) nor write it.
                for statement in (
                    "SELECT lock_key FROM pgjobs.cron_election",
                    "UPDATE pgjobs.cron_election SET leader_pid = pg_backend_pid()",
                ):
                    with pytest.raises(pg_errors.InsufficientPrivilege):
                        spoof.execute(statement)
                spoofer_pid = spoof.info.backend_pid
                leader = CronAdmin(app).leader()
        finally:
            for scheduler in (first, second, third):
                await scheduler.close()
            await shared.close()

        assert leader.status == "leader"
        assert leader.leader == second.identity
        assert leader.moved_at is not None
        assert f"backend pid {spoofer_pid}" in (leader.moved_from or "")

    asyncio.run(main())
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    role = conninfo_to_dict(stranger)["user"]
    assert len(warnings) == 1, warnings
    assert "no pgjobs worker elected" in warnings[0]
    assert f"role '{role}'" in warnings[0]
    assert "application 'spoofer'" in warnings[0]


@pytest.mark.timeout(120)
def test_workers_tick_on_while_a_stranger_holds_the_key_they_used(
    app: pgjobs.App, db: Conn, stranger: str
) -> None:
    """End to end: a worker leads, stops; a stranger takes the key it used before the next
    worker starts; the next worker fires ticks all the same."""
    app.every(timedelta(seconds=1), name="beat")(noop)
    admin = CronAdmin(app)
    config = WorkerConfig(concurrency=1, poll_interval=30)

    def ticks() -> int:
        row = db.execute("SELECT count(*) FROM pgjobs.cron_runs WHERE schedule = 'beat'")
        return int(row.fetchone()[0])  # type: ignore[index]

    async def main() -> None:
        with psycopg.connect(stranger, autocommit=True) as spoof:
            async with running_worker(app, config) as worker:
                await until(sync_check(lambda: worker.scheduler.leader), "a leader")
                conn = worker.scheduler._conn
                assert conn is not None
                key = held_key(spoof, conn.info.backend_pid)
            taken = spoof.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
            assert taken == (True,)
            assert admin.leader().status == "foreign"
            before = ticks()
            async with running_worker(app, config) as worker:
                await until(sync_check(lambda: ticks() >= before + 2), "ticks despite the stranger")
                assert worker.scheduler.leader
            assert spoof.execute("SELECT 1").fetchone() == (1,)  # still holding its old key

    asyncio.run(main())
