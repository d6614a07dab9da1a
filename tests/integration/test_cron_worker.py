"""The scheduler inside an in-process worker: it runs ticks, and follows operators' changes
at runtime; burst workers and `cron=False` workers leave schedules alone."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from worker_harness import running_worker, sync_check, until

import pgjobs
from pgjobs.cron import CronAdmin
from pgjobs.worker import WorkerConfig

Conn = psycopg.Connection[Any]


def schedule_ticks(db: Conn, name: str) -> list[datetime]:
    rows = db.execute(
        "SELECT tick_at FROM pgjobs.cron_runs WHERE schedule = %s AND tick_at IS NOT NULL"
        " ORDER BY tick_at",
        (name,),
    ).fetchall()
    return [row[0] for row in rows]


@pytest.mark.timeout(120)
def test_a_worker_runs_ticks_and_follows_changes_at_runtime(app: pgjobs.App, db: Conn) -> None:
    ran: list[int] = []

    @app.every(timedelta(seconds=1), name="beat")
    async def beat() -> None:
        ran.append(pgjobs.current_job().id)

    admin = CronAdmin(app)

    async def main() -> None:
        async with running_worker(app, WorkerConfig(concurrency=4)) as worker:
            await until(sync_check(lambda: len(ran) >= 2), "two ticks to run")
            assert worker.scheduler.leader

            await asyncio.to_thread(admin.disable, "beat")
            disabled_at = time.time()
            await asyncio.sleep(3)  # a pass already under way may still fire one tick
            late = [t for t in schedule_ticks(db, "beat") if t.timestamp() > disabled_at + 1.5]
            assert late == [], "a disabled schedule fired"

            await asyncio.to_thread(admin.set, "beat", "@every 2s")
            await asyncio.to_thread(admin.enable, "beat")
            enabled_at = time.time()
            await until(
                sync_check(
                    lambda: (
                        len([t for t in schedule_ticks(db, "beat") if t.timestamp() > enabled_at])
                        >= 2
                    )
                ),
                "ticks every 2 s after enabling",
            )
            after = [t for t in schedule_ticks(db, "beat") if t.timestamp() > enabled_at]
            assert all(int(t.timestamp()) % 2 == 0 for t in after), after

        ticks = schedule_ticks(db, "beat")
        assert len(ticks) == len(set(ticks))

    asyncio.run(main())
    finished = db.execute(
        "SELECT count(*) FROM pgjobs.job_history WHERE task = %s", (beat.name,)
    ).fetchone()
    assert finished is not None
    assert finished[0] == len(set(ran))


def test_a_burst_worker_neither_registers_nor_leads(app: pgjobs.App, db: Conn) -> None:
    app.every(timedelta(seconds=1), name="beat")(lambda: None)
    app.run_worker(burst=True, install_signal_handlers=False)
    assert db.execute("SELECT count(*) FROM pgjobs.schedules").fetchone() == (0,)


def test_a_worker_with_cron_off_leaves_schedules_alone(app: pgjobs.App, db: Conn) -> None:
    app.every(timedelta(seconds=1), name="beat")(lambda: None)

    async def main() -> None:
        async with running_worker(app, WorkerConfig(cron=False)):
            await asyncio.sleep(0.5)

    asyncio.run(main())
    assert db.execute("SELECT count(*) FROM pgjobs.schedules").fetchone() == (0,)


def test_cron_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="cron_interval and cron_leader_retry"):
        WorkerConfig(cron_interval=0)
    with pytest.raises(ValueError, match="cron_interval and cron_leader_retry"):
        WorkerConfig(cron_leader_retry=-1)
