"""Schedule expressions and their tick math: pure functions of (expression, time, timezone).

Two kinds of expression:

- cron, in croniter syntax: 5 fields (minute hour day-of-month month day-of-week), or 6 with
  a trailing seconds field (croniter's convention: `*/10 * * * * 30` = second 30 of every
  10th minute), or an alias (`@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily`,
  `@midnight`, `@hourly`). Evaluated in the schedule's timezone.
- `@every 1h30m`: a fixed interval (units d, h, m, s; whole seconds, at least 1 s). Ticks
  fall on whole multiples of the interval since 1970-01-01 00:00 UTC, so every worker agrees
  on them without shared state (`@every 1h` ticks on the hour, UTC).

Daylight saving time (cron expressions only):

- Spring forward: a wall time that does not exist that day (02:30 in Europe/Paris on the
  last Sunday of March) fires once, at the first instant after the gap (03:00). Several
  such wall times collapse into that one tick.
- Fall back: a wall time that occurs twice (02:30 on the last Sunday of October) fires once,
  at its first occurrence, when the hour field names specific hours; when the hour field
  is `*`, the expression follows elapsed time and fires in both occurrences (an hourly job
  still runs every hour).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, CroniterError, croniter

from pgjobs.errors import ConfigError

ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
FIELDS = ("minute", "hour", "day-of-month", "month", "day-of-week", "second")
_RANGES = {
    "minute": "0-59",
    "hour": "0-23",
    "day-of-month": "1-31, L",
    "month": "1-12 or JAN-DEC",
    "day-of-week": "0-7 or SUN-SAT",
    "second": "0-59",
}
_EVERY = re.compile(r"^@every\s+(?=\d)(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
# Random (R) and hashed (H) values make croniter pick a different time per parse.
_NON_DETERMINISTIC = re.compile(r"(?<![A-Za-z])[RH](?![A-Za-z])", re.IGNORECASE)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_SECOND = timedelta(seconds=1)
_CHECK_FROM = datetime(2000, 1, 1, tzinfo=UTC)  # fixed, so that parsing stays pure
MAX_LENGTH = 200


def _invalid(text: str, reason: str) -> ConfigError:
    return ConfigError(f"invalid schedule {text!r}: {reason}")


@dataclass(frozen=True)
class Interval:
    """`@every ...`: ticks at whole multiples of `seconds` since the Unix epoch (UTC)."""

    text: str
    seconds: int

    def next_after(self, after: datetime, timezone: str = "UTC") -> datetime:
        step = self.seconds * 1_000_000
        elapsed = (_aware(after) - _EPOCH) // _MICROSECOND
        return _EPOCH + _MICROSECOND * ((elapsed // step + 1) * step)

    def latest_at_or_before(self, when: datetime, timezone: str = "UTC") -> datetime:
        step = self.seconds * 1_000_000
        elapsed = (_aware(when) - _EPOCH) // _MICROSECOND
        return _EPOCH + _MICROSECOND * ((elapsed // step) * step)


@dataclass(frozen=True)
class Cron:
    """A cron expression (aliases already expanded into `fields`)."""

    text: str
    fields: tuple[str, ...]

    @property
    def _expr(self) -> str:
        return " ".join(self.fields)

    @functools.cached_property
    def _follows_elapsed_time(self) -> bool:
        # croniter normalises `*`, `*/1` and `0-23` alike to ['*'].
        return bool(croniter(self._expr).expanded[1] == ["*"])

    def _repeat(self, tick: datetime, zone: ZoneInfo) -> tuple[datetime, datetime] | None:
        """For a tick at the second occurrence of a repeated wall time (fall back), the UTC
        span [start, end) of that second occurrence, to skip it whole; else None, and always
        None when every hour fires."""
        if self._follows_elapsed_time:
            return None
        # Through UTC: croniter's own `fold` is not normalised (get_prev sets it to 1).
        local = tick.astimezone(UTC).astimezone(zone)
        if not local.fold:
            return None
        shift = local.replace(fold=0).utcoffset() - local.replace(fold=1).utcoffset()  # type: ignore[operator]
        # Transitions fall on whole seconds: bisect for the first second of the repeat.
        before, inside = int(local.timestamp() - shift.total_seconds()), int(local.timestamp())
        while inside - before > 1:
            middle = (before + inside) // 2
            if datetime.fromtimestamp(middle, UTC).astimezone(zone).fold:
                inside = middle
            else:
                before = middle
        start = datetime.fromtimestamp(inside, UTC)
        return start, start + shift

    def next_after(self, after: datetime, timezone: str = "UTC") -> datetime:
        zone = zone_info(timezone)
        it = croniter(self._expr, _aware(after).astimezone(zone))
        try:
            for _ in range(4):
                tick: datetime = it.get_next(datetime)
                repeat = self._repeat(tick, zone)
                if repeat is None:
                    return tick.astimezone(UTC)
                it = croniter(self._expr, (repeat[1] - _SECOND).astimezone(zone))
        except CroniterBadDateError:
            pass
        raise _invalid(self.text, "it matches no date after " + after.isoformat())

    def latest_at_or_before(self, when: datetime, timezone: str = "UTC") -> datetime | None:
        zone = zone_info(timezone)
        # get_prev is strictly before its start; ticks are whole seconds, so starting at
        # the next whole second finds a tick at exactly `when` too.
        start = _aware(when).replace(microsecond=0) + _SECOND
        it = croniter(self._expr, start.astimezone(zone))
        try:
            for _ in range(4):
                tick: datetime = it.get_prev(datetime)
                repeat = self._repeat(tick, zone)
                if repeat is None:
                    return tick.astimezone(UTC)
                it = croniter(self._expr, repeat[0].astimezone(zone))
        except CroniterBadDateError:
            return None
        return None  # pragma: no cover - one skip always lands outside the repeat


Expression = Interval | Cron


def _aware(when: datetime) -> datetime:
    if not isinstance(when, datetime) or when.tzinfo is None:
        raise ValueError(f"expected a timezone-aware datetime, got {when!r}")
    return when


@functools.lru_cache(maxsize=512)
def zone_info(timezone: str) -> ZoneInfo:
    """The ZoneInfo for an IANA name; ConfigError (naming it) when it is unknown."""
    if not isinstance(timezone, str) or not timezone or len(timezone) > 100:
        raise ConfigError(f"invalid timezone {timezone!r}: expected an IANA name like 'UTC'")
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ConfigError(
            f"unknown timezone {timezone!r}: expected an IANA name like 'Europe/Paris' or 'UTC'"
        ) from None


def check_timezone(timezone: str) -> str:
    zone_info(timezone)
    return timezone


def normalise(text: str) -> str:
    """The stored form of an expression: single spaces, aliases and units in lower case."""
    text = " ".join(text.split())
    return text.lower() if text.startswith("@") else text


def parse(text: str) -> Expression:
    """Validate an expression; ConfigError shows the expression and what is wrong."""
    if not isinstance(text, str):
        raise ConfigError(f"a schedule expression must be a string, got {text!r}")
    return _parse(normalise(text))


@functools.lru_cache(maxsize=1024)
def _parse(text: str) -> Expression:
    if not text:
        raise ConfigError("a schedule expression must not be empty")
    if len(text) > MAX_LENGTH:
        raise _invalid(text[:40] + "...", f"longer than {MAX_LENGTH} characters")
    if text.startswith("@every"):
        return _parse_every(text)
    if text.startswith("@"):
        if text == "@reboot":
            raise _invalid(text, "@reboot is not supported (schedules run on time, not on boot)")
        if text not in ALIASES:
            raise _invalid(
                text, "unknown alias; use @every <duration> or one of " + ", ".join(ALIASES)
            )
        return Cron(text, tuple(ALIASES[text].split()))
    fields = tuple(text.split(" "))
    if len(fields) not in (5, 6):
        raise _invalid(
            text,
            f"expected 5 fields (minute hour day-of-month month day-of-week) or 6 (the same "
            f"and second), got {len(fields)}",
        )
    if _NON_DETERMINISTIC.search(text):
        raise _invalid(text, "random (R) and hashed (H) values are not supported")
    _check_fields(text, fields)
    cron = Cron(text, fields)
    try:
        croniter(text, _CHECK_FROM).get_next(datetime)
    except CroniterBadDateError:
        raise _invalid(text, "it never matches a date (like February 30)") from None
    return cron


def _check_fields(text: str, fields: tuple[str, ...]) -> None:
    """Name the first bad field: croniter's own messages do not say which one."""
    try:
        croniter(text)
        return
    except (CroniterError, ValueError, KeyError, IndexError):
        pass
    for index, value in enumerate(fields):
        alone = ["*"] * len(fields)
        alone[index] = value
        try:
            croniter(" ".join(alone))
        except (CroniterError, ValueError, KeyError, IndexError) as exc:
            name = FIELDS[index]
            raise _invalid(
                text, f"{name} field {value!r}: {_reason(str(exc))} (allowed: {_RANGES[name]})"
            ) from None
    raise _invalid(text, "croniter cannot parse it")  # pragma: no cover - fields pass alone


def _reason(message: str) -> str:
    if "out of range" in message:
        return "out of range"
    if "step" in message:
        return "that step is not allowed"
    if "Question mark" in message:
        return "? is only allowed in day-of-month and day-of-week"
    return "not a valid value"


def _parse_every(text: str) -> Interval:
    match = _EVERY.match(text)
    if not match:
        raise _invalid(text, "expected @every followed by a duration like 30s, 5m, 1h30m or 1d")
    days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
    total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    if total < 1:
        raise _invalid(text, "the interval must be at least 1 second")
    return Interval(text, total)


def every_text(interval: timedelta | float) -> str:
    """`@every ...` for an interval; ConfigError unless it is a whole number of seconds >= 1."""
    if isinstance(interval, bool) or not isinstance(interval, timedelta | int | float):
        raise ConfigError(f"an interval must be a timedelta or seconds, got {interval!r}")
    delta = interval if isinstance(interval, timedelta) else timedelta(seconds=interval)
    seconds = delta.total_seconds()
    if seconds < 1 or delta % timedelta(seconds=1):
        raise ConfigError(f"invalid interval {delta!r}: use a whole number of seconds, at least 1")
    total = int(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, total = divmod(total, size)
        if count:
            parts.append(f"{count}{unit}")
    return "@every " + "".join(parts)


def next_tick(expression: str, after: datetime, timezone: str = "UTC") -> datetime:
    """The first tick strictly after `after`, as an aware UTC datetime."""
    return parse(expression).next_after(after, check_timezone(timezone))


def latest_tick(expression: str, when: datetime, timezone: str = "UTC") -> datetime | None:
    """The last tick at or before `when` (None if the expression never matched before)."""
    return parse(expression).latest_at_or_before(when, check_timezone(timezone))
