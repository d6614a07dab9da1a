"""The admin API over real Postgres: manual triggers, history with trigger sources and
outcomes, listings and validation before anything is stored."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

import pgjobs
from pgjobs import db as pgdb
from pgjobs.cron import CronAdmin, Trigger
from pgjobs.cron.scheduler import Scheduler
from pgjobs.states import JobState

Conn = psycopg.Connection[Any]
NOW = datetime.now(UTC).replace(microsecond=0)  # near the database's own clock


def passes(app: pgjobs.App, clock: pgjobs.FrozenClock, *times: datetime) -> list[int]:
    async def main() -> list[int]:
        scheduler = Scheduler(app, lambda: pgdb.connect_async(app.database.dsn), clock)
        try:
            counts = []
            for when in times:
                clock.set(when)
                counts.append(await scheduler.run_once(when))
            return counts
        finally:
            await scheduler.close()

    return asyncio.run(main())


@pytest.fixture
def clock(app: pgjobs.App) -> pgjobs.FrozenClock:
    frozen = pgjobs.FrozenClock(NOW)
    app.clock = frozen
    return frozen


def test_manual_trigger_is_refused_while_a_run_is_queued_or_running(
    app: pgjobs.App, db: Conn, clock: pgjobs.FrozenClock
) -> None:
    task = app.cron("0 3 * * *", name="nightly", queue="batch", kwargs={"full": True})(
        lambda full: None
    )
    passes(app, clock, NOW)
    admin = CronAdmin(app)

    first = admin.trigger("nightly", by="someone@box")
    row = db.execute("SELECT task, queue, kwargs FROM pgjobs.jobs WHERE id = %s", (first,))
    assert row.fetchone() == (task.name, "batch", {"full": True})

    with pytest.raises(pgjobs.TriggerRefused) as refused:
        admin.trigger("nightly")
    assert str(refused.value) == f"schedule 'nightly' already has a run queued (job {first})"
    assert refused.value.active_job == first

    db.execute("UPDATE pgjobs.jobs SET state = 'running', worker_id = 1 WHERE id = %s", (first,))
    with pytest.raises(pgjobs.TriggerRefused, match=f"a run running \\(job {first}\\)"):
        admin.trigger("nightly", source=Trigger.OPERATOR)

    forced = admin.trigger("nightly", force=True, source="operator", by="ops@box")
    assert forced > first
    assert db.execute(
        "SELECT job_id, tick_at, trigger, triggered_by FROM pgjobs.cron_runs ORDER BY job_id"
    ).fetchall() == [
        (first, None, "api", "someone@box"),
        (forced, None, "operator", "ops@box"),
    ]

    # Once no run is queued or running any more, a trigger goes through without force.
    db.execute("DELETE FROM pgjobs.jobs")
    assert admin.trigger("nightly") > forced

    with pytest.raises(pgjobs.ScheduleNotFound, match="no schedule named 'nope'"):
        admin.trigger("nope")
    with pytest.raises(ValueError, match="'operator' or 'api'"):
        admin.trigger("nightly", source=Trigger.SCHEDULE)


def test_history_shows_who_triggered_each_run_with_its_outcome(
    app: pgjobs.App, db: Conn, clock: pgjobs.FrozenClock
) -> None:
    @app.every(timedelta(seconds=10), name="tick")
    def tick() -> None:
        pass

    @app.every(timedelta(seconds=10), name="broken", max_attempts=1)
    def broken() -> None:
        raise pgjobs.Discard("the report source is gone")

    start = NOW.replace(second=NOW.second - NOW.second % 10)  # on a tick
    assert passes(app, clock, start, start + timedelta(seconds=10)) == [0, 2]
    admin = CronAdmin(app)
    admin.trigger("tick", source="operator", force=True, by="ops@box")  # the tick is queued
    admin.trigger("tick", source="api", force=True, by="code@box")

    # Runs execute as ordinary jobs; a pass records their outcomes.
    app.run_worker(burst=True, install_signal_handlers=False)
    passes(app, clock, start + timedelta(seconds=11))

    history = admin.history("tick")
    assert [(r.trigger, r.triggered_by, r.state, r.attempts) for r in history] == [
        (Trigger.API, "code@box", JobState.SUCCEEDED, 1),
        (Trigger.OPERATOR, "ops@box", JobState.SUCCEEDED, 1),
        (Trigger.SCHEDULE, history[2].triggered_by, JobState.SUCCEEDED, 1),
    ]
    assert history[2].tick_at == start + timedelta(seconds=10)
    assert [r.tick_at for r in history[:2]] == [None, None]
    for run in history:
        assert run.duration is not None
        assert run.duration >= timedelta(0)
        assert run.last_error is None
    assert [r.job_id for r in admin.history("tick", limit=1)] == [history[0].job_id]

    [failed] = admin.history("broken")
    assert failed.state is JobState.DEAD
    assert failed.last_error is not None
    assert "the report source is gone" in failed.last_error

    infos = {info.name: info for info in admin.schedules()}
    assert (infos["tick"].succeeded, infos["tick"].failed, infos["tick"].success_rate) == (
        3,
        0,
        1.0,
    )
    assert infos["tick"].last_run is not None
    assert infos["tick"].last_run.trigger is Trigger.API
    assert infos["tick"].last_run.state is JobState.SUCCEEDED
    assert (infos["broken"].success_rate, infos["broken"].status) == (0.0, "enabled")
    broken_run = infos["broken"].last_run
    assert broken_run is not None
    assert (broken_run.tick_at, broken_run.trigger) == (start + timedelta(seconds=10), "schedule")
    assert broken_run.last_error is not None
    assert infos["broken"].description == "every 10 seconds"

    # The history outlives the pruning of finished jobs: the outcome was recorded.
    db.execute("DELETE FROM pgjobs.job_history")
    assert [(r.state, r.attempts) for r in admin.history("tick")] == [(JobState.SUCCEEDED, 1)] * 3
    assert admin.schedule("tick").success_rate == 1.0

    with pytest.raises(pgjobs.ScheduleNotFound):
        admin.history("nope")
    with pytest.raises(ValueError, match="limit"):
        admin.history("tick", limit=0)


def test_a_run_whose_job_was_deleted_is_closed_without_a_state(
    app: pgjobs.App, db: Conn, clock: pgjobs.FrozenClock
) -> None:
    app.cron("@daily", name="daily")(lambda: None)
    passes(app, clock, NOW)
    admin = CronAdmin(app)
    admin.trigger("daily")
    db.execute("DELETE FROM pgjobs.jobs")
    passes(app, clock, NOW + timedelta(seconds=1))
    [run] = admin.history("daily")
    assert (run.state, run.finished_at is not None) == (None, True)
    assert admin.trigger("daily")  # nothing active any more


def test_invalid_changes_are_refused_before_they_are_stored(
    app: pgjobs.App, db: Conn, clock: pgjobs.FrozenClock
) -> None:
    app.cron("0 9 * * MON", name="digest", timezone="Europe/Paris")(lambda: None)
    passes(app, clock, NOW)
    admin = CronAdmin(app)
    before = db.execute("SELECT * FROM pgjobs.schedules").fetchall()

    with pytest.raises(pgjobs.ConfigError, match=r"invalid schedule '0 25 \* \* \*': hour"):
        admin.set("digest", "0 25 * * *")
    with pytest.raises(pgjobs.ConfigError, match="unknown timezone 'Mars/Base'"):
        admin.set("digest", "0 9 * * *", timezone="Mars/Base")
    with pytest.raises(pgjobs.ConfigError, match="never matches"):
        admin.set("digest", "0 0 31 2 *")
    with pytest.raises(pgjobs.ScheduleNotFound):
        admin.set("nope", "@daily")
    for change in (admin.enable, admin.disable, admin.reset, admin.schedule):
        with pytest.raises(pgjobs.ScheduleNotFound, match="no schedule named 'nope'"):
            change("nope")
    assert db.execute("SELECT * FROM pgjobs.schedules").fetchall() == before

    info = admin.set("digest", "  @every   90s ")
    assert (info.expression, info.timezone, info.description) == (
        "@every 90s",
        "Europe/Paris",
        "every 1 minute 30 seconds",
    )
    assert info.next_run is not None
    assert info.next_run > NOW


def test_a_schema_without_cron_tables_gives_a_clear_error(dsn: str) -> None:
    app = pgjobs.App(dsn, schema="never_migrated")
    try:
        with pytest.raises(pgjobs.SchemaError, match="run `pgjobs migrate`"):
            CronAdmin(app).schedules()
    finally:
        app.close()
