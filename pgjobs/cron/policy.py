"""Which due ticks a leader enqueues: the missed-ticks policy, as a pure function."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from pgjobs.cron.expression import Expression
from pgjobs.cron.schedule import Missed

# Missed.ALL enqueues at most this many ticks after downtime (the most recent ones).
CATCH_UP_LIMIT = 100
# Missed.SKIP still runs a tick noticed at most this late (a failover, a busy pass).
ON_TIME = timedelta(seconds=60)
_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class Plan:
    ticks: tuple[datetime, ...]  # to enqueue now, oldest first
    next_tick: datetime  # the first tick after `now`
    dropped: int  # due ticks the policy does not enqueue (counted up to CATCH_UP_LIMIT)


def plan_ticks(
    expression: Expression, timezone: str, next_tick: datetime, now: datetime, missed: Missed
) -> Plan:
    """The ticks to enqueue at `now` when `next_tick` is the first not yet enqueued."""
    if next_tick > now:
        return Plan((), next_tick, 0)
    latest = expression.latest_at_or_before(now, timezone)
    if latest is None or latest < next_tick:  # next_tick itself is due, whatever it is
        latest = next_tick
    following = expression.next_after(latest, timezone)
    if missed is Missed.ALL:
        ticks = [latest]
        while len(ticks) < CATCH_UP_LIMIT:
            earlier = expression.latest_at_or_before(ticks[-1] - _MICROSECOND, timezone)
            if earlier is None or earlier < next_tick:
                break
            ticks.append(earlier)
        ticks.reverse()
        dropped = _count(expression, timezone, next_tick, ticks[0]) - 1
        return Plan(tuple(ticks), following, dropped)
    dropped = _count(expression, timezone, next_tick, latest) - 1
    if missed is Missed.SKIP and now - latest > ON_TIME:
        return Plan((), following, dropped + 1)
    return Plan((latest,), following, dropped)


def _count(expression: Expression, timezone: str, first: datetime, last: datetime) -> int:
    """Ticks in [first, last] (first being one), counted up to CATCH_UP_LIMIT."""
    count, tick = 1, first
    while count < CATCH_UP_LIMIT:
        tick = expression.next_after(tick, timezone)
        if tick > last:
            break
        count += 1
    return count
