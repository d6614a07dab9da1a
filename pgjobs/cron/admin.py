"""Operating schedules at runtime: list, enable, disable, re-time, trigger, history.

`pgjobs cron ...` is a thin layer over `CronAdmin`. Every timestamp it writes is the
database's (or a test's FrozenClock's, see `Clock.db_now`): an operator's laptop clock does
not re-arm schedules. Every change records who made it (`by`, default "user@host").
"""

from __future__ import annotations

import getpass
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from pgjobs.cron.describe import describe
from pgjobs.cron.errors import ScheduleNotFound, TriggerRefused
from pgjobs.cron.expression import check_timezone, next_tick, parse
from pgjobs.cron.schedule import Missed, Trigger
from pgjobs.errors import ConfigError
from pgjobs.states import JobState

if TYPE_CHECKING:
    from pgjobs.app import App

SUCCESS_WINDOW = 100  # the success rate covers this many most recent finished runs


def default_actor() -> str:
    """Who is making a change, for `updated_by` and `triggered_by`: "user@host"."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no login name (some containers)
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when is not None else None


@dataclass(frozen=True)
class Run:
    """One run of a schedule: a tick the leader enqueued, or a manual trigger."""

    job_id: int
    tick_at: datetime | None  # None for a manual run
    trigger: Trigger
    triggered_by: str | None
    enqueued_at: datetime
    state: JobState | None  # None: the job was deleted before its outcome was recorded
    attempts: int | None
    started_at: datetime | None
    finished_at: datetime | None
    last_error: str | None = None

    @property
    def duration(self) -> timedelta | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at

    def as_dict(self) -> dict[str, Any]:
        duration = self.duration
        return {
            "job_id": self.job_id,
            "tick_at": _iso(self.tick_at),
            "trigger": self.trigger.value,
            "triggered_by": self.triggered_by,
            "enqueued_at": _iso(self.enqueued_at),
            "state": self.state.value if self.state else None,
            "attempts": self.attempts,
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "duration_seconds": duration.total_seconds() if duration is not None else None,
            "last_error": self.last_error,
        }


@dataclass(frozen=True)
class Leader:
    """Who holds the cron leader lock (the `cron_leader` view).

    status: "leader" (a process the election chose), "none", or "foreign" (a session no
    worker elected holds the key; the next candidate moves the election away from it).
    """

    status: str
    leader: str | None  # host:pid of the leading process
    holder_pid: int | None  # backend pid holding the key
    holder_role: str | None
    holder_application: str | None
    elected_at: datetime | None
    moved_at: datetime | None  # the last time the election moved away from a foreign holder
    moved_from: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "leader": self.leader,
            "holder_pid": self.holder_pid,
            "holder_role": self.holder_role,
            "holder_application": self.holder_application,
            "elected_at": _iso(self.elected_at),
            "moved_at": _iso(self.moved_at),
            "moved_from": self.moved_from,
        }


@dataclass(frozen=True)
class ScheduleInfo:
    """A schedule as stored: code defaults, operator overrides, progress and recent runs."""

    name: str
    task: str
    queue: str
    expression: str  # in effect: the operator's if set, else the code's
    timezone: str
    code_expression: str
    code_timezone: str
    overridden: bool
    enabled: bool
    missed: Missed
    next_run: datetime | None  # None when disabled or removed from code
    last_tick: datetime | None
    registered_at: datetime
    removed_at: datetime | None  # set when the code of a starting worker lacked it
    updated_at: datetime | None
    updated_by: str | None
    last_run: Run | None
    succeeded: int  # among the last SUCCESS_WINDOW finished runs
    failed: int

    @property
    def description(self) -> str:
        return describe(self.expression, self.timezone)

    @property
    def status(self) -> str:
        if self.removed_at is not None:
            return "removed from code"
        return "enabled" if self.enabled else "disabled"

    @property
    def success_rate(self) -> float | None:
        finished = self.succeeded + self.failed
        return self.succeeded / finished if finished else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "task": self.task,
            "queue": self.queue,
            "status": self.status,
            "enabled": self.enabled,
            "expression": self.expression,
            "timezone": self.timezone,
            "description": self.description,
            "code_expression": self.code_expression,
            "code_timezone": self.code_timezone,
            "overridden": self.overridden,
            "missed": self.missed.value,
            "next_run": _iso(self.next_run),
            "last_tick": _iso(self.last_tick),
            "registered_at": _iso(self.registered_at),
            "removed_at": _iso(self.removed_at),
            "updated_at": _iso(self.updated_at),
            "updated_by": self.updated_by,
            "last_run": self.last_run.as_dict() if self.last_run else None,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "success_rate": self.success_rate,
        }


def _schedule_from_row(row: Sequence[Any]) -> ScheduleInfo:
    (
        name,
        task,
        queue,
        expression,
        timezone,
        code_expression,
        code_timezone,
        override_expression,
        override_timezone,
        enabled,
        missed,
        armed_at,
        stored_next,
        last_tick,
        registered_at,
        removed_at,
        updated_at,
        updated_by,
        *last,
        succeeded,
        failed,
    ) = row
    next_run = None
    if enabled and removed_at is None:
        try:
            next_run = stored_next or next_tick(expression, armed_at, timezone)
        except ConfigError:  # stored by hand, bypassing validation: nothing will fire
            next_run = None
    last_run = _run_from_row(last) if last[0] is not None else None
    return ScheduleInfo(
        name=name,
        task=task,
        queue=queue,
        expression=expression,
        timezone=timezone,
        code_expression=code_expression,
        code_timezone=code_timezone,
        overridden=override_expression is not None or override_timezone is not None,
        enabled=enabled,
        missed=Missed(missed),
        next_run=next_run,
        last_tick=last_tick,
        registered_at=registered_at,
        removed_at=removed_at,
        updated_at=updated_at,
        updated_by=updated_by,
        last_run=last_run,
        succeeded=int(succeeded or 0),
        failed=int(failed or 0),
    )


def _run_from_row(row: Sequence[Any]) -> Run:
    (
        job_id,
        tick_at,
        trigger,
        triggered_by,
        enqueued_at,
        state,
        attempts,
        started_at,
        finished_at,
        last_error,
    ) = row
    return Run(
        job_id=job_id,
        tick_at=tick_at,
        trigger=Trigger(trigger),
        triggered_by=triggered_by,
        enqueued_at=enqueued_at,
        state=JobState(state) if state else None,
        attempts=attempts,
        started_at=started_at,
        finished_at=finished_at,
        last_error=last_error,
    )


class CronAdmin:
    """Runtime control of an App's schedules (in its schema), for operators and code."""

    def __init__(self, app: App):
        self.app = app
        self.database = app.database
        self.q = app.database.queries

    def _execute(self, name: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        with self.database.errors(), self.database.pool().connection() as conn:
            return conn.execute(self.q[name], params).fetchall()

    # ------------------------------------------------------------------- reading
    def schedules(self) -> list[ScheduleInfo]:
        """Every schedule in the table, by name, including those removed from code."""
        rows = self._execute("cron_list", {"name": None, "window": SUCCESS_WINDOW})
        return [_schedule_from_row(row) for row in rows]

    def schedule(self, name: str) -> ScheduleInfo:
        rows = self._execute("cron_list", {"name": name, "window": SUCCESS_WINDOW})
        if not rows:
            raise ScheduleNotFound(f"no schedule named {name!r} (see `pgjobs cron ls`)")
        return _schedule_from_row(rows[0])

    def leader(self) -> Leader:
        """Who leads cron now, and whether a foreign session holds the leader key."""
        rows = self._execute("cron_leader", {})
        if not rows:
            return Leader("none", None, None, None, None, None, None, None)
        return Leader(*rows[0])

    def history(self, name: str, *, limit: int = 20) -> list[Run]:
        """The schedule's most recent runs, newest first."""
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        with self.database.errors(), self.database.pool().connection() as conn:
            if conn.execute(self.q["cron_schedule_exists"], {"name": name}).fetchone() is None:
                raise ScheduleNotFound(f"no schedule named {name!r} (see `pgjobs cron ls`)")
            rows = conn.execute(self.q["cron_history"], {"name": name, "limit": limit})
            return [_run_from_row(row) for row in rows.fetchall()]

    # ------------------------------------------------------------------- changing
    def _change(
        self, query: str, name: str, params: dict[str, Any], by: str | None
    ) -> ScheduleInfo:
        now = self.app.clock.db_now()
        params = {**params, "name": name, "now": now, "by": by or default_actor()}
        if not self._execute(query, params):
            raise ScheduleNotFound(f"no schedule named {name!r} (see `pgjobs cron ls`)")
        return self.schedule(name)

    def enable(self, name: str, *, by: str | None = None) -> ScheduleInfo:
        """Fire again, from the next tick on (ticks that passed while disabled never fire)."""
        return self._change("cron_set_enabled", name, {"enabled": True}, by)

    def disable(self, name: str, *, by: str | None = None) -> ScheduleInfo:
        """Stop firing; the leader sees it within a pass. Survives deploys."""
        return self._change("cron_set_enabled", name, {"enabled": False}, by)

    def set(
        self, name: str, expression: str, *, timezone: str | None = None, by: str | None = None
    ) -> ScheduleInfo:
        """Override the code's timing (validated first; survives deploys until `reset`).
        Without `timezone`, the timezone in effect stays."""
        text = parse(expression).text
        if timezone is not None:
            check_timezone(timezone)
        return self._change("cron_override", name, {"expression": text, "timezone": timezone}, by)

    def reset(self, name: str, *, by: str | None = None) -> ScheduleInfo:
        """Drop the operator's timing: the code's expression and timezone apply again."""
        return self._change("cron_reset", name, {}, by)

    def trigger(
        self,
        name: str,
        *,
        force: bool = False,
        source: Trigger | str = Trigger.API,
        by: str | None = None,
    ) -> int:
        """Enqueue a run now; returns its job id. Refused (TriggerRefused) while one of the
        schedule's runs is queued or running, unless `force`, and for a schedule removed
        from code."""
        trigger = Trigger(source)
        if trigger is Trigger.SCHEDULE:
            raise ValueError("a manual run's source is 'operator' or 'api'")
        q = self.q
        with (
            self.database.errors(),
            self.database.pool().connection() as conn,
            conn.transaction(),
        ):
            row = conn.execute(q["cron_lock_schedule"], {"name": name}).fetchone()
            if row is None:
                raise ScheduleNotFound(f"no schedule named {name!r} (see `pgjobs cron ls`)")
            if row[0] is not None:
                raise TriggerRefused(
                    f"schedule {name!r} was removed from code on {row[0]:%Y-%m-%d %H:%M %Z}; "
                    "it no longer runs"
                )
            if not force:
                active = conn.execute(q["cron_active_runs"], {"name": name}).fetchall()
                if active:
                    job_id, state = active[0]
                    raise TriggerRefused(
                        f"schedule {name!r} already has a run {state} (job {job_id})",
                        active_job=job_id,
                    )
            params = {
                "name": name,
                "sequence": q.sequence("job_id_seq"),
                "trigger": trigger.value,
                "by": by or default_actor(),
                "now": self.app.clock.db_now(),
            }
            created = conn.execute(q["cron_run_now"], params).fetchone()
            assert created is not None
            return int(created[0])
