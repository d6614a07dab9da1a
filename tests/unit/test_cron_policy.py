"""The missed-ticks policy: which due ticks a leader enqueues at a given `now` (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pgjobs.cron.expression import parse
from pgjobs.cron.policy import CATCH_UP_LIMIT, ON_TIME, plan_ticks
from pgjobs.cron.schedule import Missed

MINUTELY = parse("* * * * *")
T0 = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


@pytest.mark.parametrize("missed", list(Missed))
def test_nothing_is_due_before_the_next_tick(missed: Missed) -> None:
    plan = plan_ticks(MINUTELY, "UTC", T0, T0 - timedelta(microseconds=1), missed)
    assert (plan.ticks, plan.next_tick, plan.dropped) == ((), T0, 0)


@pytest.mark.parametrize("missed", list(Missed))
def test_a_tick_on_time_is_enqueued_whatever_the_policy(missed: Missed) -> None:
    for now in (T0, T0 + timedelta(seconds=0.5), T0 + timedelta(seconds=59)):
        plan = plan_ticks(MINUTELY, "UTC", T0, now, missed)
        assert plan.ticks == (T0,)
        assert plan.next_tick == T0 + MINUTE
        assert plan.dropped == 0


def test_latest_runs_only_the_most_recent_missed_tick() -> None:
    now = T0 + 10 * MINUTE + timedelta(seconds=20)
    plan = plan_ticks(MINUTELY, "UTC", T0, now, Missed.LATEST)
    assert plan.ticks == (T0 + 10 * MINUTE,)
    assert plan.next_tick == T0 + 11 * MINUTE
    assert plan.dropped == 10


def test_latest_after_a_long_downtime_is_one_tick_not_a_burst() -> None:
    now = T0 + timedelta(days=30)
    plan = plan_ticks(parse("* * * * * *"), "UTC", T0, now, Missed.LATEST)
    assert plan.ticks == (now,)
    assert plan.next_tick == now + timedelta(seconds=1)
    assert plan.dropped == CATCH_UP_LIMIT - 1  # counted only up to the limit


def test_skip_runs_a_late_tick_only_within_the_on_time_window() -> None:
    hourly = parse("0 * * * *")
    late = plan_ticks(hourly, "UTC", T0, T0 + ON_TIME, Missed.SKIP)
    assert late.ticks == (T0,)
    too_late = plan_ticks(hourly, "UTC", T0, T0 + ON_TIME + timedelta(seconds=1), Missed.SKIP)
    assert too_late.ticks == ()
    assert too_late.next_tick == T0 + timedelta(hours=1)
    assert too_late.dropped == 1


def test_skip_after_downtime_runs_a_recent_tick_but_never_an_old_one() -> None:
    now = T0 + 5 * MINUTE + timedelta(seconds=10)
    plan = plan_ticks(MINUTELY, "UTC", T0, now, Missed.SKIP)
    assert plan.ticks == (T0 + 5 * MINUTE,)  # 10 s late: on time
    assert plan.dropped == 5
    daily = parse("0 12 * * *")
    plan = plan_ticks(daily, "UTC", T0, T0 + timedelta(days=2, hours=1), Missed.SKIP)
    assert plan.ticks == ()
    assert plan.next_tick == T0 + timedelta(days=3)
    assert plan.dropped == 3


def test_all_catches_up_every_missed_tick_in_order() -> None:
    now = T0 + 4 * MINUTE + timedelta(seconds=1)
    plan = plan_ticks(MINUTELY, "UTC", T0, now, Missed.ALL)
    assert plan.ticks == tuple(T0 + n * MINUTE for n in range(5))
    assert plan.next_tick == T0 + 5 * MINUTE
    assert plan.dropped == 0


def test_all_is_capped_to_the_most_recent_ticks() -> None:
    now = T0 + 149 * MINUTE
    plan = plan_ticks(MINUTELY, "UTC", T0, now, Missed.ALL)
    assert len(plan.ticks) == CATCH_UP_LIMIT
    assert plan.ticks[0] == T0 + (150 - CATCH_UP_LIMIT) * MINUTE
    assert plan.ticks[-1] == now
    assert plan.dropped == 150 - CATCH_UP_LIMIT


def test_intervals_follow_the_same_policy() -> None:
    every = parse("@every 30s")
    now = T0 + timedelta(minutes=5, seconds=10)
    assert plan_ticks(every, "UTC", T0, now, Missed.LATEST).ticks == (T0 + timedelta(minutes=5),)
    assert len(plan_ticks(every, "UTC", T0, now, Missed.ALL).ticks) == 11


def test_missed_ticks_across_a_dst_change_are_counted_in_real_ticks() -> None:
    daily = parse("30 2 * * *")
    first = datetime(2026, 3, 28, 1, 30, tzinfo=UTC)  # 02:30 CET
    now = datetime(2026, 3, 30, 12, 0, tzinfo=UTC)
    plan = plan_ticks(daily, "Europe/Paris", first, now, Missed.ALL)
    assert plan.ticks == (
        first,
        datetime(2026, 3, 29, 1, 0, tzinfo=UTC),  # 03:00 CEST, the skipped 02:30
        datetime(2026, 3, 30, 0, 30, tzinfo=UTC),  # 02:30 CEST
    )
