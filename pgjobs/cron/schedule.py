"""Schedule definitions as code declares them (`@app.cron`, `@app.every`): the defaults that
workers register in the `schedules` table at start."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from pgjobs.cron.describe import describe
from pgjobs.cron.expression import check_timezone, parse
from pgjobs.errors import ConfigError
from pgjobs.job import check_name, encode_arguments

if TYPE_CHECKING:
    from pgjobs.task import Task


class Missed(StrEnum):
    """What the leader does with ticks that passed while no leader ran (downtime).

    LATEST (default): enqueue the most recent missed tick once, drop the older ones.
    SKIP: drop ticks noticed more than `policy.ON_TIME` late; wait for the next one.
    ALL: enqueue every missed tick, oldest first, at most `policy.CATCH_UP_LIMIT` (the
    most recent ones).
    """

    LATEST = "latest"
    SKIP = "skip"
    ALL = "all"


class Trigger(StrEnum):
    """Who made a run: the leader on a tick, an operator (CLI), or code (Python API)."""

    SCHEDULE = "schedule"
    OPERATOR = "operator"
    API = "api"


@dataclass(frozen=True)
class Schedule:
    """A schedule's code defaults. Operators may override the timing and the enabled flag
    in the database; those overrides survive a new registration of these defaults."""

    name: str
    task: str
    expression: str
    timezone: str
    queue: str
    priority: int
    max_attempts: int | None
    kwargs: Mapping[str, Any]
    kwargs_json: str
    missed: Missed

    @property
    def description(self) -> str:
        return describe(self.expression, self.timezone)


def define_schedule(
    task: Task[Any, Any],
    expression: str,
    *,
    name: str | None,
    timezone: str,
    queue: str | None,
    kwargs: Mapping[str, Any] | None,
    missed: Missed | str,
) -> Schedule:
    """Validate a schedule of `task`; every problem is a ConfigError naming the schedule."""
    label = name if name is not None else task.name
    try:
        schedule_name = check_name("schedule", label)
        queue_name = check_name("queue", queue) if queue is not None else task.queue
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    parsed = parse(expression)
    check_timezone(timezone)
    try:
        policy = Missed(missed)
    except ValueError:
        choices = ", ".join(repr(m.value) for m in Missed)
        raise ConfigError(
            f"schedule {schedule_name!r}: missed must be one of {choices}, got {missed!r}"
        ) from None
    kwargs = dict(kwargs or {})
    try:
        task.check_arguments((), kwargs)
        _, kwargs_json = encode_arguments(task.name, (), kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"schedule {schedule_name!r}: {exc}") from None
    return Schedule(
        name=schedule_name,
        task=task.name,
        expression=parsed.text,
        timezone=timezone,
        queue=queue_name,
        priority=task.priority,
        max_attempts=task.max_attempts,
        kwargs=kwargs,
        kwargs_json=kwargs_json,
        missed=policy,
    )


def registration_params(schedules: list[Schedule]) -> dict[str, list[Any]]:
    """Parameters of `cron_register`, one array per column, in name order (lock order)."""
    ordered = sorted(schedules, key=lambda s: s.name)
    return {
        "names": [s.name for s in ordered],
        "tasks": [s.task for s in ordered],
        "queues": [s.queue for s in ordered],
        "priorities": [s.priority for s in ordered],
        "max_attempts": [s.max_attempts for s in ordered],
        "kwargs": [s.kwargs_json for s in ordered],
        "missed": [s.missed.value for s in ordered],
        "expressions": [s.expression for s in ordered],
        "timezones": [s.timezone for s in ordered],
    }
