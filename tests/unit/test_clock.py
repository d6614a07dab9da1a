"""FrozenClock and SystemClock."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone

import pytest

from pgjobs import Clock, FrozenClock, SystemClock

START = datetime(2026, 6, 1, 8, 30, tzinfo=UTC)


def test_frozen_clock_does_not_move_by_itself() -> None:
    clock = FrozenClock(START)
    assert clock.now() == START
    assert clock.now() == START
    assert clock.monotonic() == clock.monotonic() == 0.0


def test_default_start_is_aware() -> None:
    now = FrozenClock().now()
    assert now.tzinfo is not None
    assert now == datetime(2026, 1, 1, tzinfo=UTC)


def test_advance_by_timedelta_and_seconds() -> None:
    clock = FrozenClock(START)
    assert clock.advance(timedelta(minutes=5)) == START + timedelta(minutes=5)
    assert clock.advance(2.5) == START + timedelta(minutes=5, seconds=2.5)
    assert clock.now() == START + timedelta(seconds=302.5)
    assert clock.monotonic() == 302.5


def test_set_moves_now_and_monotonic_forward() -> None:
    clock = FrozenClock(START)
    clock.set(START + timedelta(hours=1))
    assert clock.now() == START + timedelta(hours=1)
    assert clock.monotonic() == 3600.0


def test_set_backwards_never_moves_monotonic_back() -> None:
    clock = FrozenClock(START)
    clock.advance(10)
    clock.set(START - timedelta(days=1))
    assert clock.now() == START - timedelta(days=1)
    assert clock.monotonic() == 10.0


def test_advance_backwards_never_moves_monotonic_back() -> None:
    # Clock.monotonic() "never goes back"; moving wall time back must not break deadlines.
    clock = FrozenClock(START)
    clock.advance(10)
    assert clock.advance(timedelta(seconds=-4)) == START + timedelta(seconds=6)
    assert clock.monotonic() == 10.0


def test_set_accepts_other_timezones() -> None:
    clock = FrozenClock(START)
    paris = timezone(timedelta(hours=2))
    clock.set(datetime(2026, 6, 1, 11, 30, tzinfo=paris))  # 09:30 UTC
    assert clock.now() == START + timedelta(hours=1)
    assert clock.monotonic() == 3600.0


def test_refuses_naive_start() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        FrozenClock(datetime(2026, 1, 1))


def test_refuses_naive_set_and_stays_put() -> None:
    clock = FrozenClock(START)
    with pytest.raises(ValueError, match="timezone-aware"):
        clock.set(datetime(2026, 1, 1))
    assert clock.now() == START
    assert clock.monotonic() == 0.0


def test_advance_is_thread_safe() -> None:
    clock = FrozenClock(START)

    def tick() -> None:
        for _ in range(1000):
            clock.advance(1)

    threads = [threading.Thread(target=tick) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert clock.now() == START + timedelta(seconds=4000)
    assert clock.monotonic() == 4000.0


def test_system_clock() -> None:
    clock: Clock = SystemClock()
    now = clock.now()
    assert now.tzinfo is not None
    assert now.utcoffset() == timedelta(0)
    first = clock.monotonic()
    assert clock.monotonic() >= first


def test_frozen_clock_satisfies_the_protocol() -> None:
    clock: Clock = FrozenClock(START)
    assert clock.now() == START


def test_db_now_leaves_shared_time_to_the_database_unless_frozen() -> None:
    """Shared decisions (pruning, cron ticks) use the database's clock in production; a
    FrozenClock drives them in tests."""
    assert SystemClock().db_now() is None
    clock = FrozenClock(START)
    assert clock.db_now() == START
    clock.advance(60)
    assert clock.db_now() == clock.now() == START + timedelta(seconds=60)
