"""Tick math: pure functions of (expression, time, timezone); DST, seconds, aliases, intervals.

Daylight saving behaviour (documented in pgjobs.cron.expression):
- a wall time skipped by spring-forward fires once, at the end of the gap (02:30 -> 03:00);
- a wall time repeated by fall-back fires once (first occurrence) when the hour field names
  hours, and in both occurrences when the hour field is `*` (it follows elapsed time).
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from pgjobs import ConfigError
from pgjobs.cron.expression import (
    Cron,
    Interval,
    every_text,
    latest_tick,
    next_tick,
    normalise,
    parse,
)

PARIS = ZoneInfo("Europe/Paris")
# Europe/Paris in 2026: spring forward on March 29 (02:00 CET -> 03:00 CEST), fall back on
# October 25 (03:00 CEST -> 02:00 CET).


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def paris(*args: int, fold: int = 0) -> datetime:
    """A Paris wall time as UTC (ambiguous local times never compare equal across zones)."""
    return datetime(*args, tzinfo=PARIS, fold=fold).astimezone(UTC)  # type: ignore[misc]


def ticks(expression: str, start: datetime, end: datetime, timezone: str = "UTC") -> list[datetime]:
    """Every tick in (start, end], by repeated next_tick."""
    found = []
    tick = next_tick(expression, start, timezone)
    while tick <= end:
        found.append(tick)
        tick = next_tick(expression, tick, timezone)
    return found


def ticks_backwards(
    expression: str, start: datetime, end: datetime, timezone: str = "UTC"
) -> list[datetime]:
    """Every tick in (start, end], by repeated latest_tick from the end."""
    found = []
    tick = latest_tick(expression, end, timezone)
    while tick is not None and tick > start:
        found.append(tick)
        tick = latest_tick(expression, tick - timedelta(microseconds=1), timezone)
    return found[::-1]


# ----------------------------------------------------------------------------- basics
def test_next_tick_is_strictly_after_and_utc() -> None:
    assert next_tick("0 9 * * *", utc(2026, 1, 5, 8, 59, 59)) == utc(2026, 1, 5, 9, 0)
    assert next_tick("0 9 * * *", utc(2026, 1, 5, 9, 0)) == utc(2026, 1, 6, 9, 0)
    tick = next_tick("0 9 * * *", utc(2026, 1, 5, 9, 0, 0, 1))
    assert tick == utc(2026, 1, 6, 9, 0)
    assert tick.tzinfo is UTC


def test_latest_tick_includes_an_exact_match_and_ignores_microseconds_before() -> None:
    assert latest_tick("0 9 * * *", utc(2026, 1, 5, 9, 0)) == utc(2026, 1, 5, 9, 0)
    assert latest_tick("0 9 * * *", utc(2026, 1, 5, 9, 0, 0, 999)) == utc(2026, 1, 5, 9, 0)
    before = utc(2026, 1, 5, 9, 0) - timedelta(microseconds=1)
    assert latest_tick("0 9 * * *", before) == utc(2026, 1, 4, 9, 0)


def test_the_result_depends_only_on_the_arguments() -> None:
    after = utc(2030, 6, 1, 12, 0)
    first = next_tick("*/5 * * * *", after, "Europe/Paris")
    for _ in range(3):
        assert next_tick("*/5 * * * *", after, "Europe/Paris") == first


def test_weekly_digest_in_paris_converts_to_utc() -> None:
    # Monday 09:00 in Paris: 08:00 UTC in winter, 07:00 UTC in summer.
    assert next_tick("0 9 * * MON", utc(2026, 1, 1), "Europe/Paris") == utc(2026, 1, 5, 8, 0)
    assert next_tick("0 9 * * MON", utc(2026, 7, 1), "Europe/Paris") == utc(2026, 7, 6, 7, 0)


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        next_tick("* * * * *", datetime(2026, 1, 1))


# ----------------------------------------------------------------------------- DST
def test_spring_forward_a_skipped_daily_time_fires_once_at_the_end_of_the_gap() -> None:
    found = ticks("30 2 * * *", utc(2026, 3, 27, 12), utc(2026, 3, 31, 12), "Europe/Paris")
    assert found == [
        paris(2026, 3, 28, 2, 30),  # 01:30 UTC
        paris(2026, 3, 29, 3, 0),  # 02:30 does not exist: 03:00 CEST = 01:00 UTC
        paris(2026, 3, 30, 2, 30),  # 00:30 UTC
        paris(2026, 3, 31, 2, 30),
    ]
    assert found[1] == utc(2026, 3, 29, 1, 0)


def test_fall_back_a_repeated_daily_time_fires_once_at_its_first_occurrence() -> None:
    found = ticks("30 2 * * *", utc(2026, 10, 23, 12), utc(2026, 10, 27, 12), "Europe/Paris")
    assert found == [
        paris(2026, 10, 24, 2, 30),
        paris(2026, 10, 25, 2, 30, fold=0),  # 02:30 CEST = 00:30 UTC; not again at 01:30 UTC
        paris(2026, 10, 26, 2, 30),
        paris(2026, 10, 27, 2, 30),
    ]
    assert found[1] == utc(2026, 10, 25, 0, 30)


def test_fall_back_an_hourly_schedule_fires_every_elapsed_hour() -> None:
    found = ticks("0 * * * *", utc(2026, 10, 24, 22), utc(2026, 10, 25, 23), "Europe/Paris")
    # The local day of October 25 has 25 hours: 25 ticks, one per UTC hour, none twice.
    assert found == [utc(2026, 10, 24, 23) + timedelta(hours=n) for n in range(25)]
    local = [t.astimezone(PARIS) for t in found]
    assert [(t.hour, t.fold) for t in local[:4]] == [(1, 0), (2, 0), (2, 1), (3, 0)]


def test_spring_forward_an_every_30_minutes_schedule_skips_the_missing_hour() -> None:
    found = ticks("*/30 * * * *", utc(2026, 3, 28, 23, 45), utc(2026, 3, 29, 2, 0), "Europe/Paris")
    assert [t.astimezone(PARIS).strftime("%H:%M %Z") for t in found] == [
        "01:00 CET",
        "01:30 CET",
        "03:00 CEST",
        "03:30 CEST",
        "04:00 CEST",
    ]
    assert [b - a for a, b in itertools.pairwise(found)] == [timedelta(minutes=30)] * 4


def test_fixed_hours_with_minutes_inside_the_repeated_hour_fire_once_each() -> None:
    found = ticks("*/20 2 * * *", utc(2026, 10, 24, 23), utc(2026, 10, 25, 3), "Europe/Paris")
    assert [t.astimezone(PARIS).strftime("%H:%M %Z") for t in found] == [
        "02:00 CEST",
        "02:20 CEST",
        "02:40 CEST",
    ]


def test_fall_back_skips_a_whole_repeated_hour_of_minutes_and_seconds() -> None:
    every_minute = ticks("* 2 * * *", utc(2026, 10, 24, 22), utc(2026, 10, 25, 4), "Europe/Paris")
    assert every_minute == [utc(2026, 10, 25, 0, m) for m in range(60)]  # 02:mm CEST only
    two_hours = ticks("* 2,3 * * *", utc(2026, 10, 24, 22), utc(2026, 10, 25, 4), "Europe/Paris")
    assert len(two_hours) == 120
    assert two_hours[60] == utc(2026, 10, 25, 2, 0)  # 03:00 CET right after 02:59 CEST
    hours = ticks("0 2-4 * * *", utc(2026, 10, 24, 22), utc(2026, 10, 25, 4), "Europe/Paris")
    assert [t.astimezone(PARIS).strftime("%H:%M %Z") for t in hours] == [
        "02:00 CEST",
        "03:00 CET",
        "04:00 CET",
    ]
    last_second = utc(2026, 10, 25, 0, 59, 59)  # 02:59:59 CEST
    assert next_tick("* 2 * * * *", last_second, "Europe/Paris") == utc(2026, 10, 26, 1, 0)
    inside_repeat = utc(2026, 10, 25, 1, 30)  # 02:30 CET, the second time round
    assert latest_tick("* 2 * * * *", inside_repeat, "Europe/Paris") == last_second


def test_new_york_dst_transitions() -> None:
    spring = ticks("30 2 * * *", utc(2026, 3, 7), utc(2026, 3, 10), "America/New_York")
    assert [t.astimezone(ZoneInfo("America/New_York")).strftime("%d %H:%M") for t in spring] == [
        "07 02:30",
        "08 03:00",
        "09 02:30",
    ]
    fall = ticks("30 1 * * *", utc(2026, 10, 31), utc(2026, 11, 3), "America/New_York")
    assert fall == [utc(2026, 10, 31, 5, 30), utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)]


def test_half_hour_dst_shift_of_lord_howe() -> None:
    # Australia/Lord_Howe moves by 30 minutes: 02:00 -> 02:30 on 2026-10-04.
    found = ticks("15 2 * * *", utc(2026, 10, 2), utc(2026, 10, 5), "Australia/Lord_Howe")
    local = [t.astimezone(ZoneInfo("Australia/Lord_Howe")).strftime("%d %H:%M") for t in found]
    assert local == ["03 02:15", "04 02:30", "05 02:15"]


@pytest.mark.parametrize(
    ("expression", "timezone", "start", "end"),
    [
        ("30 2 * * *", "Europe/Paris", utc(2026, 3, 27), utc(2026, 4, 1)),
        ("30 2 * * *", "Europe/Paris", utc(2026, 10, 23), utc(2026, 10, 28)),
        ("0 * * * *", "Europe/Paris", utc(2026, 10, 24), utc(2026, 10, 26)),
        ("*/20 * * * *", "Europe/Paris", utc(2026, 3, 28), utc(2026, 3, 30)),
        ("*/20 1-3 * * *", "Europe/Paris", utc(2026, 10, 24), utc(2026, 10, 26)),
        ("* 2 * * *", "Europe/Paris", utc(2026, 10, 24), utc(2026, 10, 26)),
        ("*/10 2,3 * * *", "America/New_York", utc(2026, 10, 31), utc(2026, 11, 3)),
        ("0 0 * * *", "America/Sao_Paulo", utc(2018, 11, 2), utc(2018, 11, 6)),
        ("30 23 * * *", "America/Sao_Paulo", utc(2019, 2, 15), utc(2019, 2, 19)),
        ("15 2 * * *", "Australia/Lord_Howe", utc(2026, 4, 3), utc(2026, 4, 7)),
        ("0 9 * * 1-5 30", "Europe/Paris", utc(2026, 3, 20), utc(2026, 4, 5)),
        ("@every 7m", "UTC", utc(2026, 1, 1), utc(2026, 1, 2)),
    ],
)
def test_forward_and_backward_enumerations_agree(
    expression: str, timezone: str, start: datetime, end: datetime
) -> None:
    forward = ticks(expression, start, end, timezone)
    assert forward
    assert ticks_backwards(expression, start, end, timezone) == forward
    assert len(set(forward)) == len(forward)


def test_sao_paulo_midnight_that_does_not_exist_fires_at_one() -> None:
    # 2018-11-04: clocks jumped from 00:00 to 01:00 in Sao Paulo.
    found = ticks("0 0 * * *", utc(2018, 11, 3, 12), utc(2018, 11, 5, 12), "America/Sao_Paulo")
    zone = ZoneInfo("America/Sao_Paulo")
    assert [t.astimezone(zone).strftime("%d %H:%M") for t in found] == ["04 01:00", "05 00:00"]


# ----------------------------------------------------------------------------- seconds, aliases
def test_six_fields_take_seconds_last() -> None:
    assert next_tick("* * * * * */15", utc(2026, 1, 1, 12, 0, 1)) == utc(2026, 1, 1, 12, 0, 15)
    assert next_tick("0 9 * * MON 30", utc(2026, 1, 1)) == utc(2026, 1, 5, 9, 0, 30)
    assert ticks("* * * * * *", utc(2026, 1, 1), utc(2026, 1, 1, 0, 0, 3)) == [
        utc(2026, 1, 1, 0, 0, s) for s in (1, 2, 3)
    ]
    assert latest_tick("* * * * * */10", utc(2026, 1, 1, 0, 0, 19)) == utc(2026, 1, 1, 0, 0, 10)


@pytest.mark.parametrize(
    ("alias", "after", "expected"),
    [
        ("@hourly", utc(2026, 1, 1, 10, 30), utc(2026, 1, 1, 11)),
        ("@daily", utc(2026, 1, 1, 10, 30), utc(2026, 1, 2)),
        ("@midnight", utc(2026, 1, 1, 10, 30), utc(2026, 1, 2)),
        ("@weekly", utc(2026, 1, 1, 10, 30), utc(2026, 1, 4)),  # Sunday
        ("@monthly", utc(2026, 1, 15), utc(2026, 2, 1)),
        ("@yearly", utc(2026, 1, 15), utc(2027, 1, 1)),
        ("@annually", utc(2026, 1, 15), utc(2027, 1, 1)),
        ("@HOURLY", utc(2026, 1, 1, 10, 30), utc(2026, 1, 1, 11)),
    ],
)
def test_aliases(alias: str, after: datetime, expected: datetime) -> None:
    assert next_tick(alias, after) == expected


def test_aliases_follow_the_timezone() -> None:
    assert next_tick("@daily", utc(2026, 1, 1, 12), "Europe/Paris") == utc(2026, 1, 1, 23)


def test_parse_normalises_whitespace_and_alias_case() -> None:
    assert parse("  0   9 * *  MON ").text == "0 9 * * MON"
    assert parse("@Daily").text == "@daily"
    assert parse("@every   90s").text == "@every 90s"
    assert normalise("\t*/5\n* * * *") == "*/5 * * * *"
    assert isinstance(parse("@hourly"), Cron)
    assert isinstance(parse("@every 1h"), Interval)


# ----------------------------------------------------------------------------- intervals
def test_interval_ticks_are_multiples_of_the_interval_since_the_epoch() -> None:
    assert next_tick("@every 30s", utc(2026, 1, 1, 12, 0, 10)) == utc(2026, 1, 1, 12, 0, 30)
    assert next_tick("@every 30s", utc(2026, 1, 1, 12, 0, 30)) == utc(2026, 1, 1, 12, 1)
    assert latest_tick("@every 30s", utc(2026, 1, 1, 12, 0, 30)) == utc(2026, 1, 1, 12, 0, 30)
    assert latest_tick("@every 30s", utc(2026, 1, 1, 12, 0, 29)) == utc(2026, 1, 1, 12, 0)
    assert next_tick("@every 1h", utc(2026, 1, 1, 12, 59, 59, 999999)) == utc(2026, 1, 1, 13)
    assert next_tick("@every 1d", utc(2026, 1, 1, 12)) == utc(2026, 1, 2)
    seven = next_tick("@every 7s", utc(2026, 1, 1))
    assert int(seven.timestamp()) % 7 == 0


def test_interval_ignores_the_timezone_and_dst() -> None:
    after = utc(2026, 10, 24, 23)
    assert ticks("@every 1h", after, after + timedelta(hours=5), "Europe/Paris") == [
        after + timedelta(hours=n) for n in range(1, 6)
    ]


@pytest.mark.parametrize(
    ("interval", "text"),
    [
        (timedelta(seconds=30), "@every 30s"),
        (timedelta(minutes=1, seconds=30), "@every 1m30s"),
        (timedelta(hours=1), "@every 1h"),
        (timedelta(days=1, hours=2, minutes=3, seconds=4), "@every 1d2h3m4s"),
        (90, "@every 1m30s"),
        (1.0, "@every 1s"),
    ],
)
def test_every_text(interval: timedelta | float, text: str) -> None:
    assert every_text(interval) == text
    assert parse(text).seconds == (  # type: ignore[union-attr]
        interval.total_seconds() if isinstance(interval, timedelta) else interval
    )


@pytest.mark.parametrize(
    ("interval", "message"),
    [
        (timedelta(0), "at least 1"),
        (timedelta(seconds=-5), "at least 1"),
        (timedelta(milliseconds=1500), "whole number of seconds"),
        (0.5, "at least 1"),
        (True, "timedelta or seconds"),
        ("30s", "timedelta or seconds"),
    ],
)
def test_invalid_intervals(interval: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        every_text(interval)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- invalid input
@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("", "must not be empty"),
        ("   ", "must not be empty"),
        ("0 25 * * *", "hour field '25': out of range (allowed: 0-23)"),
        ("61 * * * *", "minute field '61': out of range"),
        ("* * 0 * *", "day-of-month field '0': out of range"),
        ("* * * 13 *", "month field '13': out of range"),
        ("* * * * 8", "day-of-week field '8': out of range"),
        ("* * * * FOO", "day-of-week field 'FOO': not a valid value"),
        ("* * * * * 60", "second field '60': out of range"),
        ("*/0 * * * *", "minute field '*/0': that step is not allowed"),
        ("1,,2 * * * *", "minute field '1,,2'"),
        ("? * * * *", "? is only allowed in day-of-month and day-of-week"),
        ("* * * *", "expected 5 fields"),
        ("* * * * * * *", "got 7"),
        ("0 0 30 2 *", "never matches a date"),
        ("0 0 31 4 *", "never matches a date"),
        ("R * * * *", "random (R) and hashed (H)"),
        ("H 9 * * *", "random (R) and hashed (H)"),
        ("@reboot", "@reboot is not supported"),
        ("@fortnightly", "unknown alias"),
        ("@every", "expected @every followed by a duration"),
        ("@every 10", "expected @every followed by a duration"),
        ("@every 5x", "expected @every followed by a duration"),
        ("@every 0s", "at least 1 second"),
        ("@every 1s1h", "expected @every followed by a duration"),
        ("x" * 300, "longer than 200 characters"),
    ],
)
def test_invalid_expressions_name_the_expression_and_the_problem(
    expression: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse(expression)
    text = str(info.value)
    assert message in text
    if expression.strip() and len(expression) < 100:
        assert repr(normalise(expression)) in text


def test_non_string_expression() -> None:
    with pytest.raises(ConfigError, match="must be a string"):
        parse(5)  # type: ignore[arg-type]


@pytest.mark.parametrize("timezone", ["Mars/Olympus", "", "../etc/passwd", "Europe/"])
def test_invalid_timezones(timezone: str) -> None:
    with pytest.raises(ConfigError, match="timezone"):
        next_tick("* * * * *", utc(2026, 1, 1), timezone)


def test_names_and_days_are_accepted_in_any_case() -> None:
    assert next_tick("0 9 * jan mon-fri", utc(2026, 1, 1)) == utc(2026, 1, 1, 9)
    assert next_tick("0 9 * * thu", utc(2026, 1, 2)) == utc(2026, 1, 8, 9)


def test_leap_day_schedule_is_valid_and_rare() -> None:
    assert next_tick("0 0 29 2 *", utc(2026, 1, 1)) == utc(2028, 2, 29)
