"""What `@app.cron` and `@app.every` do: register a task (unless given one) and its schedule."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from pgjobs.backoff import Backoff
from pgjobs.cron.schedule import Missed, define_schedule
from pgjobs.errors import ConfigError
from pgjobs.job import check_name
from pgjobs.task import DEFAULT_MAX_ATTEMPTS, Task

if TYPE_CHECKING:
    from pgjobs.app import App

P = ParamSpec("P")
R = TypeVar("R")


def schedule_decorator(
    app: App,
    expression: str,
    *,
    name: str | None,
    timezone: str,
    queue: str | None,
    kwargs: Mapping[str, Any] | None,
    missed: Missed | str,
    priority: int,
    max_attempts: int,
    retry: Backoff | None,
    timeout: float | timedelta | None,
) -> Callable[[Callable[P, R]], Task[P, R]]:
    """A decorator registering the handler as a task and `expression` as its schedule."""
    task_options: dict[str, Any] = {
        "priority": priority,
        "max_attempts": max_attempts,
        "retry": retry,
        "timeout": timeout,
    }
    defaults = {"priority": 0, "max_attempts": DEFAULT_MAX_ATTEMPTS, "retry": None, "timeout": None}

    if queue is not None:
        try:
            check_name("queue", queue)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    def register(fn: Callable[P, R]) -> Task[P, R]:
        tasks_before = dict(app.tasks)
        if isinstance(fn, Task):  # stacked schedules, or a task declared with @app.task
            if fn.app is not app:
                raise ConfigError(f"task {fn.name!r} belongs to another App")
            if task_options != defaults:
                raise ConfigError(f"task {fn.name!r} exists already: give its options to @app.task")
            task: Task[P, R] = fn
        else:
            # A task made for the schedule lives on its queue: manual enqueues go there too.
            task = app.task(queue=queue or "default", **task_options)(fn)
        try:
            schedule = define_schedule(
                task,
                expression,
                name=name,
                timezone=timezone,
                queue=queue,
                kwargs=kwargs,
                missed=missed,
            )
            known = app.schedules.get(schedule.name)
            if known is not None and known != schedule:
                raise ConfigError(
                    f"schedule name {schedule.name!r} is registered twice: pass name= to tell "
                    "the schedules apart"
                )
        except ConfigError:
            app.tasks.clear()  # no half-registered handler stays behind
            app.tasks.update(tasks_before)
            raise
        app.schedules[schedule.name] = schedule
        return task

    return register
