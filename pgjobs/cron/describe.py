"""Schedule expressions in words, for `pgjobs cron ls`.

Only common shapes are put into words; anything else is shown as the raw expression, so a
description is never wrong, at worst unexplained.
"""

from __future__ import annotations

import re

from croniter import croniter

from pgjobs.cron.expression import Cron, Interval, parse
from pgjobs.errors import ConfigError

_INT = re.compile(r"^\d+$")
_STEP = re.compile(r"^\*/(\d+)$")
_INTS = re.compile(r"^\d+(,\d+)*$")
_WEEKDAYS = re.compile(r"^[A-Za-z0-9,-]+$")
_RANGE = re.compile(r"^([A-Za-z0-9]+)-([A-Za-z0-9]+)$")
DAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
_UNITS = (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1))


def describe(expression: str, timezone: str = "UTC") -> str:
    """E.g. "every Monday at 09:00 (Europe/Paris)"; the raw expression for other shapes."""
    try:
        parsed = parse(expression)
    except ConfigError:
        return expression
    if isinstance(parsed, Interval):
        return "every " + _duration(parsed.seconds)
    words = _cron_words(parsed)
    if words is None:
        return parsed.text if timezone == "UTC" else f"{parsed.text} ({timezone})"
    text, has_time_of_day = words
    return f"{text} ({timezone})" if has_time_of_day else text


def _duration(seconds: int) -> str:
    parts = []
    for unit, size in _UNITS:
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count} {unit}{'s' if count > 1 else ''}")
    return " ".join(parts)


def _cron_words(cron: Cron) -> tuple[str, bool] | None:
    """(words, whether they name a time of day), or None for shapes not covered."""
    minute, hour, dom, month, dow, *rest = cron.fields
    second = rest[0] if rest else "0"
    if second != "0":
        if (minute, hour, dom, month, dow) != ("*",) * 5:
            return None
        if second == "*":
            return "every second", False
        step = _STEP.match(second)
        return (f"every {step[1]} seconds", False) if step else None
    if (hour, dom, month, dow) == ("*",) * 4:
        if minute == "*":
            return "every minute", False
        step = _STEP.match(minute)
        if step:
            return f"every {step[1]} minutes", False
    if not _INT.match(minute):
        return None
    if (dom, month, dow) == ("*",) * 3:
        if hour == "*":
            return f"every hour at :{int(minute):02d}", False
        step = _STEP.match(hour)
        if step:
            return f"every {step[1]} hours at :{int(minute):02d}", False
    if not _INTS.match(hour):
        return None
    times = _join([f"{int(h):02d}:{int(minute):02d}" for h in hour.split(",")])
    days = _days(cron, dom, month, dow)
    return (f"{days} at {times}", True) if days else None


def _days(cron: Cron, dom: str, month: str, dow: str) -> str | None:
    if (dom, month, dow) == ("*",) * 3:
        return "every day"
    if dom == "*" and month == "*":
        if not _WEEKDAYS.match(dow):  # leaves out nth-weekday (#) and last-weekday (L)
            return None
        weekdays = croniter(" ".join(cron.fields)).expanded[4]
        if weekdays == ["*"]:
            return "every day"
        names = [DAYS[int(d) % 7] for d in weekdays]
        if _RANGE.match(dow) and len(names) > 2:
            return f"{names[0]} to {names[-1]}"
        return "every " + _join(names)
    if dow != "*" or not (_INT.match(dom) or dom.upper() == "L"):
        return None
    day = "the last day" if dom.upper() == "L" else f"day {int(dom)}"
    if month == "*":
        return f"on {day} of every month"
    if _INT.match(month) and dom.upper() != "L":
        return f"every {MONTHS[int(month) - 1]} {int(dom)}"
    return None


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
