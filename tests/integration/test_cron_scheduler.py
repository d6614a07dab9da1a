"""The scheduler against real Postgres, driven with a FrozenClock and `run_once(now)`.

Registration, exactly-once ticks (also with two leaders at once), leadership and takeover,
runtime re-timing, disable/enable, operator overrides across deploys, schedules removed
from code, the missed-ticks policies, pruning and bad stored expressions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

import pgjobs
from pgjobs import db as pgdb
from pgjobs.cron import CronAdmin, Missed
from pgjobs.cron.scheduler import Scheduler, fresh_lock_key

NOW = datetime(2031, 3, 14, 12, 0, tzinfo=UTC)  # a Friday
SECOND = timedelta(seconds=1)
MINUTE = timedelta(minutes=1)
Conn = psycopg.Connection[Any]


def noop() -> None:
    pass


def make_scheduler(app: pgjobs.App, clock: pgjobs.FrozenClock, **options: Any) -> Scheduler:
    options.setdefault("leader_retry", 2.0)
    return Scheduler(app, lambda: pgdb.connect_async(app.database.dsn), clock, **options)


def run(app: pgjobs.App, clock: pgjobs.FrozenClock, *times: datetime, **options: Any) -> list[int]:
    """One scheduler (a process start), one pass at each time; jobs enqueued per pass."""

    async def main() -> list[int]:
        scheduler = make_scheduler(app, clock, **options)
        counts = []
        try:
            for when in times:
                clock.set(when)
                counts.append(await scheduler.run_once(when))
        finally:
            await scheduler.close()
        return counts

    return asyncio.run(main())


def schedule_row(db: Conn, name: str) -> dict[str, Any]:
    cur = db.execute("SELECT * FROM pgjobs.schedules WHERE name = %s", (name,))
    row = cur.fetchone()
    assert row is not None, f"no schedule {name}"
    assert cur.description is not None
    return dict(zip([c.name for c in cur.description], row, strict=True))


def runs(db: Conn, name: str) -> list[tuple[Any, ...]]:
    """(tick_at, trigger) of the schedule's runs, in job id order."""
    return db.execute(
        "SELECT tick_at, trigger FROM pgjobs.cron_runs WHERE schedule = %s ORDER BY job_id",
        (name,),
    ).fetchall()


def ticks(db: Conn, name: str) -> list[datetime]:
    return [tick for tick, trigger in runs(db, name) if trigger == "schedule"]


def wait_lock_free(db: Conn) -> None:
    """Until no session holds the leader lock: a backend exits (and unlocks) a moment after
    its connection is closed or terminated."""
    deadline = time.monotonic() + 30
    while db.execute("SELECT status FROM pgjobs.cron_leader").fetchone() != ("none",):
        assert time.monotonic() < deadline, "the leader lock was never released"
        time.sleep(0.01)


def queued_jobs(db: Conn, task: str) -> list[tuple[Any, ...]]:
    return db.execute(
        "SELECT id, queue, kwargs, priority, max_attempts FROM pgjobs.jobs WHERE task = %s"
        " ORDER BY id",
        (task,),
    ).fetchall()


# ----------------------------------------------------------------------------- registration
def test_registration_writes_code_defaults_and_arms_from_now(app: pgjobs.App, db: Conn) -> None:
    clock = pgjobs.FrozenClock(NOW)

    @app.cron(
        "*/5 * * * *",
        name="five",
        timezone="Europe/Paris",
        queue="reports",
        kwargs={"edition": "am"},
        priority=3,
        max_attempts=2,
    )
    def five(edition: str) -> None: ...

    app.every(timedelta(seconds=30), name="sweep", missed="all")(noop)

    assert run(app, clock, NOW) == [0]

    row = schedule_row(db, "five")
    assert row["task"] == five.name
    assert (row["queue"], row["kwargs"], row["priority"], row["max_attempts"]) == (
        "reports",
        {"edition": "am"},
        3,
        2,
    )
    assert (row["code_expression"], row["code_timezone"]) == ("*/5 * * * *", "Europe/Paris")
    assert (row["expression"], row["timezone"]) == ("*/5 * * * *", "Europe/Paris")
    assert (row["override_expression"], row["override_timezone"]) == (None, None)
    assert row["enabled"] is True
    assert row["armed_at"] == row["registered_at"] == row["seen_at"] == NOW
    assert row["next_tick"] == NOW + 5 * MINUTE
    assert (row["removed_at"], row["last_tick"], row["missed"]) == (None, None, "latest")

    sweep = schedule_row(db, "sweep")
    assert (sweep["expression"], sweep["missed"]) == ("@every 30s", "all")
    assert sweep["next_tick"] == NOW + 30 * SECOND
    assert db.execute("SELECT count(*) FROM pgjobs.jobs").fetchone() == (0,)


def test_registering_again_changes_nothing_that_is_unchanged(app: pgjobs.App, db: Conn) -> None:
    clock = pgjobs.FrozenClock(NOW)
    app.cron("* * * * *", name="minutely")(noop)
    run(app, clock, NOW, NOW + MINUTE)
    before = schedule_row(db, "minutely")
    run(app, clock, NOW + MINUTE + 10 * SECOND)  # a restart: registers again
    after = schedule_row(db, "minutely")
    assert after["seen_at"] == NOW + MINUTE + 10 * SECOND
    del before["seen_at"], after["seen_at"]
    assert after == before  # same revision, next tick, arming
    assert ticks(db, "minutely") == [NOW + MINUTE]


# ----------------------------------------------------------------------------- exactly once
def test_each_tick_is_enqueued_exactly_once(app: pgjobs.App, db: Conn) -> None:
    clock = pgjobs.FrozenClock(NOW)
    task = app.every(timedelta(seconds=30), name="sweep", queue="maint", kwargs={})(noop)

    times = [
        NOW,
        NOW + 29 * SECOND,
        NOW + 30 * SECOND,  # tick
        NOW + 30 * SECOND,
        NOW + 45 * SECOND,
        NOW + 60 * SECOND,  # tick
        NOW + 61 * SECOND,
    ]
    assert run(app, clock, *times) == [0, 0, 1, 0, 0, 1, 0]

    assert ticks(db, "sweep") == [NOW + 30 * SECOND, NOW + 60 * SECOND]
    jobs = queued_jobs(db, task.name)
    assert [(queue, kwargs) for _, queue, kwargs, _, _ in jobs] == [("maint", {})] * 2
    job_ids = [row[0] for row in jobs]
    linked = db.execute("SELECT job_id FROM pgjobs.cron_runs ORDER BY job_id").fetchall()
    assert [row[0] for row in linked] == job_ids
    row = schedule_row(db, "sweep")
    assert (row["last_tick"], row["next_tick"]) == (NOW + 60 * SECOND, NOW + 90 * SECOND)
    by = db.execute("SELECT DISTINCT triggered_by FROM pgjobs.cron_runs").fetchall()
    assert len(by) == 1
    assert ":" in by[0][0]  # host:pid of the leader


def test_two_leaders_at_once_still_enqueue_each_tick_once(app: pgjobs.App, db: Conn) -> None:
    """The unique key on (schedule, tick) holds even when the lock does not (a split brain)."""
    clock = pgjobs.FrozenClock(NOW)
    task = app.every(timedelta(seconds=10), name="often", missed="all")(noop)
    app.cron("* * * * *", name="minutely")(noop)

    async def main() -> list[tuple[int, int]]:
        first = make_scheduler(app, clock)
        second = make_scheduler(app, clock)
        await first.run_once(NOW)
        # A split brain: the second leads too, without the lock (as if the server had not
        # noticed yet that the first one's connection is gone).
        second._conn = await pgdb.connect_async(app.database.dsn)
        second.leader = second.registered = True
        counts = []
        try:
            for step in range(13):
                when = NOW + step * 5 * SECOND
                clock.set(when)
                a, b = await asyncio.gather(first.run_once(when), second.run_once(when))
                assert first.leader
                assert second.leader
                counts.append((a, b))
        finally:
            await first.close()
            await second.close()
        return counts

    counts = asyncio.run(main())
    assert sum(a + b for a, b in counts) == 6 + 1
    assert ticks(db, "often") == [NOW + n * 10 * SECOND for n in range(1, 7)]
    assert ticks(db, "minutely") == [NOW + MINUTE]
    assert len(queued_jobs(db, task.name)) == 7  # both schedules run `noop`


def test_a_stale_next_tick_cannot_fire_a_tick_twice(app: pgjobs.App, db: Conn) -> None:
    clock = pgjobs.FrozenClock(NOW)
    task = app.cron("* * * * *", name="minutely", missed="all")(noop)
    run(app, clock, NOW, NOW + MINUTE)
    # A leader that read the schedule before the tick was recorded would plan it again.
    db.execute("UPDATE pgjobs.schedules SET next_tick = %s", (NOW + MINUTE,))
    assert run(app, clock, NOW + MINUTE + SECOND) == [0]
    assert ticks(db, "minutely") == [NOW + MINUTE]
    assert len(queued_jobs(db, task.name)) == 1
    assert schedule_row(db, "minutely")["next_tick"] == NOW + 2 * MINUTE


# ----------------------------------------------------------------------------- leadership
def test_only_the_lock_holder_enqueues_and_a_follower_takes_over(app: pgjobs.App, db: Conn) -> None:
    clock = pgjobs.FrozenClock(NOW)
    app.every(timedelta(seconds=10), name="often")(noop)

    async def main() -> None:
        first = make_scheduler(app, clock)
        second = make_scheduler(app, clock)
        try:
            assert await first.run_once(NOW) == 0
            assert await second.run_once(NOW) == 0
            assert first.leader
            assert not second.leader

            clock.advance(10)
            assert await second.run_once(clock.now()) == 0  # due, but not the leader
            assert await first.run_once(clock.now()) == 1

            # The leader's connection dies: its lock goes with it.
            assert first._conn is not None
            pid = first._conn.info.backend_pid
            db.execute("SELECT pg_terminate_backend(%s)", (pid,))
            wait_lock_free(db)
            clock.advance(10)
            assert await second.run_once(clock.now()) == 1  # the retry interval has passed
            assert second.leader
            with pytest.raises(psycopg.OperationalError):
                await first.run_once(clock.now())
            await first.close()  # what the loop does after an error
            assert not first.leader

            clock.advance(10)
            assert await first.run_once(clock.now()) == 0  # follows now
            assert not first.leader
            assert await second.run_once(clock.now()) == 1

            # A graceful stop hands over too, at the follower's next attempt.
            await second.close()
            wait_lock_free(db)
            clock.advance(1)
            assert await first.run_once(clock.now()) == 0  # tried 1 s ago: waits
            clock.advance(1)
            assert await first.run_once(clock.now()) == 0
            assert first.leader
        finally:
            await first.close()
            await second.close()

    asyncio.run(main())
    assert len(ticks(db, "often")) == 3


def test_a_follower_with_a_probe_keeps_no_connection_of_its_own(app: pgjobs.App, db: Conn) -> None:
    clock = pgjobs.FrozenClock(NOW)
    app.every(timedelta(seconds=10), name="often")(noop)

    async def main() -> None:
        shared = await pgdb.connect_async(app.database.dsn)

        async def probe() -> psycopg.AsyncConnection[Any]:
            return shared

        leader = make_scheduler(app, clock)
        follower = make_scheduler(app, clock, probe=probe)
        try:
            await leader.run_once(NOW)
            await follower.run_once(NOW)  # registers, tries once, lets its connection go
            assert leader.leader
            assert not follower.leader
            assert follower.registered
            assert follower._conn is None
            clock.advance(2)
            await follower.run_once(clock.now())  # sees a leader through the probe only
            assert follower._conn is None

            await leader.close()
            wait_lock_free(db)
            clock.advance(10)
            assert await follower.run_once(clock.now()) == 1
            assert follower.leader
            assert follower._conn is not None
        finally:
            await leader.close()
            await follower.close()
            await shared.close()

    asyncio.run(main())


def test_pause_is_short_when_a_tick_is_near(app: pgjobs.App) -> None:
    clock = pgjobs.FrozenClock(NOW)
    app.every(timedelta(seconds=10), name="often")(noop)

    async def main() -> tuple[float, float, float]:
        scheduler = make_scheduler(app, clock, interval=1.0)
        try:
            await scheduler.run_once(NOW)
            clock.advance(9.7)
            near = scheduler.pause()
            clock.advance(0.1)
            nearer = scheduler.pause()
            clock.advance(5)
            return near, nearer, min(scheduler.pause(), 1.0)
        finally:
            await scheduler.close()

    near, nearer, late = asyncio.run(main())
    assert near == pytest.approx(0.301, abs=1e-6)
    assert nearer == pytest.approx(0.201, abs=1e-6)
    assert late == pytest.approx(0.005)  # overdue: pass again at once


# ----------------------------------------------------------------------------- database time
class AheadClock(pgjobs.SystemClock):
    """A production clock on a host whose wall clock runs `skew` ahead (`db_now()` is
    None, as for every SystemClock: shared decisions are the database's)."""

    def __init__(self, skew: timedelta):
        self.skew = skew

    def now(self) -> datetime:
        return super().now() + self.skew


def fired(db: Conn, name: str) -> list[tuple[datetime, datetime]]:
    """(tick_at, the job's enqueued_at on the database's clock) of each tick, in order."""
    return db.execute(
        "SELECT r.tick_at, j.enqueued_at FROM pgjobs.cron_runs r"
        " JOIN pgjobs.jobs j ON j.id = r.job_id WHERE r.schedule = %s ORDER BY r.tick_at",
        (name,),
    ).fetchall()


async def lead_until(scheduler: Scheduler, done: Any, what: str) -> None:
    """Run the scheduler's own loop (the production path) until `done()`; then stop it."""
    passes = asyncio.create_task(scheduler.loop())
    try:
        deadline = time.monotonic() + 30
        while not done():
            assert not passes.done(), "the scheduler loop ended"
            assert time.monotonic() < deadline, f"gave up waiting for {what}"
            await asyncio.sleep(0.02)
    finally:
        passes.cancel()
        await asyncio.gather(passes, return_exceptions=True)
        await scheduler.close()


@pytest.mark.timeout(90)
def test_a_leader_whose_clock_runs_ahead_fires_on_database_time(app: pgjobs.App, db: Conn) -> None:
    """A leader whose host clock runs 31 minutes ahead, then one whose clock is right: no
    tick fires before its time on the database's clock, and none is skipped at the handover
    (once, such a leader fired ticks early and the next one dropped ticks)."""
    app.cron("* * * * * *", name="every-second", missed="all")(noop)
    connect = lambda: pgdb.connect_async(app.database.dsn)  # noqa: E731

    async def main() -> None:
        ahead = Scheduler(app, connect, AheadClock(31 * MINUTE), leader_retry=0.1)
        await lead_until(ahead, lambda: len(fired(db, "every-second")) >= 3, "3 ticks")
        handover = len(fired(db, "every-second"))
        right = Scheduler(app, connect, pgjobs.SystemClock(), leader_retry=0.1)
        more = lambda: len(fired(db, "every-second")) >= handover + 3  # noqa: E731
        await lead_until(right, more, "3 more ticks after the handover")

    asyncio.run(main())
    runs = fired(db, "every-second")
    early = [(tick, at) for tick, at in runs if tick > at]
    assert not early, f"ticks enqueued before their time: {early}"
    first = runs[0][0]
    assert [tick for tick, _ in runs] == [first + n * SECOND for n in range(len(runs))]
    assert runs[-1][1] - first < 10 * MINUTE  # database time throughout, not the host's


# ----------------------------------------------------------------------------- runtime control
def test_runtime_retiming_applies_on_the_next_pass(app: pgjobs.App, db: Conn) -> None:
    clock = pgjobs.FrozenClock(NOW)
    app.clock = clock
    admin = CronAdmin(app)
    app.cron("* * * * *", name="report")(noop)

    async def main() -> list[int]:
        scheduler = make_scheduler(app, clock)
        counts = []
        try:
            counts.append(await scheduler.run_once(NOW + 30 * SECOND))
            clock.set(NOW + 40 * SECOND)
            info = admin.set("report", "*/10 * * * *", by="ops@test")
            assert (info.expression, info.overridden) == ("*/10 * * * *", True)
            assert info.next_run == NOW + 10 * MINUTE
            for when in (NOW + MINUTE, NOW + 5 * MINUTE, NOW + 10 * MINUTE):
                clock.set(when)
                counts.append(await scheduler.run_once(when))
            # A timezone too: 09:00 in Paris is 08:00 UTC in March (before the DST change).
            clock.set(NOW + 11 * MINUTE)
            info = admin.set("report", "0 9 * * *", timezone="Europe/Paris")
            assert info.next_run == datetime(2031, 3, 15, 8, 0, tzinfo=UTC)
            assert info.description == "every day at 09:00 (Europe/Paris)"
            for when in (NOW + 20 * MINUTE, datetime(2031, 3, 15, 8, 0, tzinfo=UTC)):
                clock.set(when)
                counts.append(await scheduler.run_once(when))
        finally:
            await scheduler.close()
        return counts

    assert asyncio.run(main()) == [0, 0, 0, 1, 0, 1]
    assert ticks(db, "report") == [NOW + 10 * MINUTE, datetime(2031, 3, 15, 8, tzinfo=UTC)]
    row = schedule_row(db, "report")
    assert row["code_expression"] == "* * * * *"
    assert "@" in row["updated_by"]  # the second change named nobody: user@host
    assert row["override_timezone"] == "Europe/Paris"


def test_disable_stops_firing_and_enable_rearms_without_backfill(app: pgjobs.App, db: Conn) -> None:
    clock = pgjobs.FrozenClock(NOW)
    app.clock = clock
    admin = CronAdmin(app)
    app.cron("* * * * *", name="minutely", missed="all")(noop)

    async def main() -> list[int]:
        scheduler = make_scheduler(app, clock)
        counts = []

        async def at(when: datetime) -> None:
            clock.set(when)
            counts.append(await scheduler.run_once(when))

        try:
            await at(NOW)
            await at(NOW + MINUTE)  # fires
            clock.set(NOW + MINUTE + 30 * SECOND)
            info = admin.disable("minutely", by="ops@test")
            assert (info.enabled, info.status, info.next_run) == (False, "disabled", None)
            await at(NOW + 2 * MINUTE)
            await at(NOW + 5 * MINUTE)
            clock.set(NOW + 5 * MINUTE + 30 * SECOND)
            info = admin.enable("minutely")
            assert info.next_run == NOW + 6 * MINUTE  # not the ticks missed while disabled
            await at(NOW + 5 * MINUTE + 40 * SECOND)
            await at(NOW + 6 * MINUTE)  # fires
        finally:
            await scheduler.close()
        return counts

    assert asyncio.run(main()) == [0, 1, 0, 0, 0, 1]
    assert ticks(db, "minutely") == [NOW + MINUTE, NOW + 6 * MINUTE]
    row = schedule_row(db, "minutely")
    assert row["updated_at"] == NOW + 5 * MINUTE + 30 * SECOND
    assert row["updated_by"]


def test_operator_overrides_survive_a_deploy(dsn: str, db: Conn) -> None:
    clock = pgjobs.FrozenClock(NOW)
    first = pgjobs.App(dsn, clock=clock)
    second = pgjobs.App(dsn, clock=clock)
    try:
        first.cron("0 * * * *", name="report", queue="a")(noop)
        first.cron("0 * * * *", name="other")(noop)
        run(first, clock, NOW)
        admin = CronAdmin(first)
        admin.set("report", "*/15 * * * *", timezone="Asia/Tokyo", by="ops@test")
        admin.disable("other", by="ops@test")

        # The next deploy changes both schedules' code defaults.
        second.cron("0 */2 * * *", name="report", queue="b", kwargs={})(noop)
        second.cron("30 * * * *", name="other")(noop)
        run(second, clock, NOW + MINUTE)

        report = schedule_row(db, "report")
        assert (report["code_expression"], report["queue"]) == ("0 */2 * * *", "b")
        assert (report["expression"], report["timezone"]) == ("*/15 * * * *", "Asia/Tokyo")
        assert report["updated_by"] == "ops@test"
        other = schedule_row(db, "other")
        assert (other["expression"], other["enabled"]) == ("30 * * * *", False)

        info = CronAdmin(second).reset("report", by="ops@test")
        assert (info.expression, info.timezone, info.overridden) == ("0 */2 * * *", "UTC", False)
        assert info.next_run == NOW + timedelta(hours=2)
    finally:
        first.close()
        second.close()


def test_a_code_change_of_the_timing_rearms_the_schedule(dsn: str, db: Conn) -> None:
    clock = pgjobs.FrozenClock(NOW)
    first = pgjobs.App(dsn)
    second = pgjobs.App(dsn)
    try:
        first.cron("0 * * * *", name="report")(noop)
        run(first, clock, NOW)
        assert schedule_row(db, "report")["next_tick"] == NOW + timedelta(hours=1)
        revision = schedule_row(db, "report")["revision"]

        second.cron("*/10 * * * *", name="report")(noop)
        run(second, clock, NOW + MINUTE)
        row = schedule_row(db, "report")
        assert row["revision"] == revision + 1
        assert (row["armed_at"], row["next_tick"]) == (NOW + MINUTE, NOW + 10 * MINUTE)
    finally:
        first.close()
        second.close()


def test_a_schedule_removed_from_code_is_reported_not_fired_and_keeps_its_history(
    dsn: str, db: Conn
) -> None:
    clock = pgjobs.FrozenClock(NOW)
    apps = [pgjobs.App(dsn, clock=clock) for _ in range(3)]
    try:
        apps[0].cron("* * * * *", name="kept")(noop)
        apps[0].cron("* * * * *", name="dropped")(noop)
        run(apps[0], clock, NOW, NOW + MINUTE, NOW + 2 * MINUTE)
        assert ticks(db, "dropped") == [NOW + MINUTE, NOW + 2 * MINUTE]

        apps[1].cron("* * * * *", name="kept")(noop)  # the deploy that deletes "dropped"
        run(apps[1], clock, NOW + 2 * MINUTE + 30 * SECOND, NOW + 3 * MINUTE, NOW + 4 * MINUTE)
        assert ticks(db, "dropped") == [NOW + MINUTE, NOW + 2 * MINUTE]
        assert ticks(db, "kept") == [NOW + n * MINUTE for n in range(1, 5)]

        admin = CronAdmin(apps[1])
        dropped = admin.schedule("dropped")
        assert dropped.status == "removed from code"
        assert dropped.removed_at == NOW + 2 * MINUTE + 30 * SECOND
        assert dropped.next_run is None
        assert [r.tick_at for r in admin.history("dropped")] == [NOW + 2 * MINUTE, NOW + MINUTE]
        assert [s.name for s in admin.schedules()] == ["dropped", "kept"]
        with pytest.raises(pgjobs.TriggerRefused, match="'dropped' was removed from code"):
            admin.trigger("dropped")

        # Back in code: fires again from its return on, without the ticks it missed.
        apps[2].cron("* * * * *", name="kept")(noop)
        apps[2].cron("* * * * *", name="dropped", missed="all")(noop)
        run(apps[2], clock, NOW + 5 * MINUTE + 30 * SECOND, NOW + 6 * MINUTE)
        assert ticks(db, "dropped") == [NOW + MINUTE, NOW + 2 * MINUTE, NOW + 6 * MINUTE]
        assert admin.schedule("dropped").status == "enabled"
    finally:
        for application in apps:
            application.close()


# ----------------------------------------------------------------------------- missed ticks
@pytest.mark.parametrize(
    ("missed", "expected"),
    [
        (Missed.LATEST, [NOW + 3 * timedelta(hours=1)]),
        (Missed.SKIP, []),
        (Missed.ALL, [NOW + n * timedelta(hours=1) for n in (1, 2, 3)]),
    ],
)
def test_missed_ticks_after_downtime_follow_the_policy(
    dsn: str, db: Conn, missed: Missed, expected: list[datetime]
) -> None:
    clock = pgjobs.FrozenClock(NOW)
    app = pgjobs.App(dsn)
    try:
        app.cron("0 * * * *", name="hourly", missed=missed)(noop)
        run(app, clock, NOW)  # the last pass before every worker stops
        # Back 3 h 10 min later: a new process registers (the code is unchanged) and leads.
        back = NOW + timedelta(hours=3, minutes=10)
        assert run(app, clock, back, back + MINUTE) == [len(expected), 0]
        assert ticks(db, "hourly") == expected
        assert schedule_row(db, "hourly")["next_tick"] == NOW + timedelta(hours=4)
    finally:
        app.close()


def test_skip_still_runs_a_tick_noticed_a_little_late(app: pgjobs.App, db: Conn) -> None:
    clock = pgjobs.FrozenClock(NOW)
    app.cron("0 * * * *", name="hourly", missed="skip")(noop)
    run(app, clock, NOW)
    assert run(app, clock, NOW + timedelta(hours=1, seconds=20)) == [1]  # a failover's delay
    assert ticks(db, "hourly") == [NOW + timedelta(hours=1)]


# ----------------------------------------------------------------------------- robustness
def test_a_bad_stored_expression_is_reported_once_and_others_still_fire(
    app: pgjobs.App, db: Conn, caplog: pytest.LogCaptureFixture
) -> None:
    clock = pgjobs.FrozenClock(NOW)
    app.cron("* * * * *", name="good")(noop)
    app.cron("* * * * *", name="bad")(noop)
    run(app, clock, NOW)
    # Written behind the admin API's back; it fits the table's shape check.
    db.execute(
        "UPDATE pgjobs.schedules SET override_expression = '0 25 * * *', next_tick = NULL"
        " WHERE name = 'bad'"
    )
    with caplog.at_level(logging.ERROR, logger="pgjobs.cron"):
        assert run(app, clock, NOW + MINUTE, NOW + 2 * MINUTE) == [1, 1]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [
        "schedule bad is not fired: invalid schedule '0 25 * * *': hour field"
        " '25': out of range (allowed: 0-23)"
    ]
    assert ticks(db, "good") == [NOW + MINUTE, NOW + 2 * MINUTE]
    assert ticks(db, "bad") == []
    assert CronAdmin(app).schedule("bad").next_run is None


def test_the_table_refuses_what_is_not_even_shaped_like_a_schedule(db: Conn) -> None:
    insert = (
        "INSERT INTO pgjobs.schedules (name, task, queue, code_expression, code_timezone)"
        " VALUES ('x', 't', 'q', %s, %s)"
    )
    for expression, timezone in [
        ("rm -rf /", "UTC"),
        ("* * * *", "UTC"),
        ("*  * * * *", "UTC"),
        ("@every soon", "UTC"),
        ("* * * * *", "Europe/Paris; DROP"),
    ]:
        with pytest.raises(psycopg.errors.CheckViolation):
            db.execute(insert, (expression, timezone))
    db.execute(insert, ("*/5 * * * * 30", "America/Argentina/Buenos_Aires"))
    with pytest.raises(psycopg.errors.CheckViolation):
        db.execute("UPDATE pgjobs.schedules SET override_expression = 'every day'")


def test_pruning_keeps_recent_runs_and_each_schedules_latest(app: pgjobs.App, db: Conn) -> None:
    clock = pgjobs.FrozenClock(NOW)
    app.cron("* * * * *", name="minutely")(noop)
    app.cron("0 0 1 1 *", name="yearly")(noop)
    day = timedelta(days=1)
    run(app, clock, NOW, NOW + MINUTE, NOW + 2 * MINUTE, retention=day)
    run(app, clock, NOW + day, NOW + day + MINUTE, retention=day)
    run(app, clock, datetime(2032, 1, 1, tzinfo=UTC), retention=day)
    db.execute("DELETE FROM pgjobs.jobs")  # their runs count as finished (job gone)
    run(app, clock, datetime(2032, 1, 3, tzinfo=UTC), retention=day)
    left = db.execute(
        "SELECT schedule, tick_at FROM pgjobs.cron_runs ORDER BY schedule, tick_at"
    ).fetchall()
    assert left == [
        ("minutely", datetime(2032, 1, 3, tzinfo=UTC)),
        ("yearly", datetime(2032, 1, 1, tzinfo=UTC)),  # older than a day, but its latest
    ]


def test_schedules_of_another_schema_are_invisible(dsn: str, db: Conn) -> None:
    clock = pgjobs.FrozenClock(NOW)
    app = pgjobs.App(dsn, schema="other_jobs")
    try:
        app.migrate()
        app.every(timedelta(seconds=10), name="often")(noop)
        assert run(app, clock, NOW, NOW + 10 * SECOND) == [0, 1]
        assert db.execute("SELECT count(*) FROM other_jobs.cron_runs").fetchone() == (1,)
        assert db.execute("SELECT count(*) FROM pgjobs.schedules").fetchone() == (0,)
        assert fresh_lock_key("other_jobs") >> 32 != fresh_lock_key("pgjobs") >> 32
    finally:
        app.close()
