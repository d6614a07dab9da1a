"""Injected time: services take a Clock so tests can freeze and advance it.

Two kinds of time. `now()` is this host's wall clock: fine for what only this process sees
(log lines, error records' `at`, display). A decision that other workers must agree on
(what is old enough to prune, when a cron tick is due) uses the database's clock instead:
services pass `clock.db_now()` as the `now` of their queries, which run
`coalesce(%(now)s, now())`. The system clock returns None there, so the database decides
and a worker whose host clock is wrong cannot prune early or fire ticks early; a
FrozenClock returns its frozen time, so tests drive those decisions too.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back, for intervals and deadlines."""
        ...

    def db_now(self) -> datetime | None:
        """The `now` for decisions shared with other workers: None lets the database's
        now() decide (production); a test clock returns its own time to drive them."""
        ...


class SystemClock:
    """The real clock. Shared decisions are left to the database's clock (`db_now()` is
    None), so a host clock that is off cannot make this worker disagree with others."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    def db_now(self) -> None:
        return None


class FrozenClock:
    """A clock that moves only when told to; for tests."""

    def __init__(self, start: datetime | None = None):
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        if self._now.tzinfo is None:
            raise ValueError("FrozenClock needs a timezone-aware datetime")
        self._mono = 0.0
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def db_now(self) -> datetime:
        """The frozen time: tests drive pruning and cron ticks with it too."""
        return self.now()

    def advance(self, delta: timedelta | float) -> datetime:
        seconds = delta.total_seconds() if isinstance(delta, timedelta) else float(delta)
        with self._lock:
            self._now += timedelta(seconds=seconds)
            self._mono += max(0.0, seconds)  # monotonic never goes back, as in set()
            return self._now

    def set(self, when: datetime) -> None:
        with self._lock:
            if when.tzinfo is None:
                raise ValueError("FrozenClock needs a timezone-aware datetime")
            self._mono += max(0.0, (when - self._now).total_seconds())
            self._now = when
