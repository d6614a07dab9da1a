"""`pgjobs cron ...`: list, enable, disable, re-time, trigger and inspect schedules.

Parses, calls `pgjobs.cron.CronAdmin`, renders with rich; errors are one line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, TypeVar
from zoneinfo import ZoneInfo

import typer
from rich.markup import escape
from rich.table import Table

from pgjobs.cli.common import Dsn, Json, Schema, fail, out
from pgjobs.cron.admin import CronAdmin, Leader, Run, ScheduleInfo
from pgjobs.cron.errors import TriggerRefused
from pgjobs.cron.schedule import Trigger
from pgjobs.errors import PgJobsError

app = typer.Typer(
    no_args_is_help=True,
    help="Cron and interval schedules: list, enable, disable, re-time, trigger, history.",
)

Name = Annotated[str, typer.Argument(metavar="NAME", help="Schedule name (see `pgjobs cron ls`).")]
T = TypeVar("T")

_STATE_STYLE = {
    "succeeded": "green",
    "dead": "red",
    "cancelled": "yellow",
    "running": "cyan",
    "queued": "blue",
}


@contextmanager
def _admin(dsn: str | None, schema: str) -> Iterator[CronAdmin]:
    """The admin API of the App at --dsn/--schema; any pgjobs error is one line, exit 1."""
    from pgjobs.app import App

    try:
        application = App(dsn, schema)
    except PgJobsError as exc:
        raise fail(str(exc)) from None
    try:
        yield CronAdmin(application)
    except TriggerRefused as exc:
        hint = "; use --force to enqueue another anyway" if exc.active_job is not None else ""
        raise fail(f"{exc}{hint}") from None
    except (PgJobsError, ValueError) as exc:
        raise fail(str(exc)) from None
    finally:
        application.close()


def _call(dsn: str | None, schema: str, action: Callable[[CronAdmin], T]) -> T:
    with _admin(dsn, schema) as admin:
        return action(admin)


# ----------------------------------------------------------------------------- rendering
def _local(when: datetime, timezone: str) -> str:
    try:
        zone = ZoneInfo(timezone)
    except (ValueError, OSError):
        zone = ZoneInfo("UTC")
    local = when.astimezone(zone)
    return local.strftime("%Y-%m-%d %H:%M:%S %Z" if local.second else "%Y-%m-%d %H:%M %Z")


def _span(delta: timedelta) -> str:
    seconds = int(abs(delta.total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return " ".join(parts[:2])


def _duration(delta: timedelta | None) -> str:
    if delta is None:
        return "-"
    seconds = delta.total_seconds()
    return f"{seconds:.2f}s" if seconds < 60 else _span(delta)


def _state(state: str | None) -> str:
    text = state or "lost"
    return f"[{_STATE_STYLE.get(text, 'magenta')}]{text}[/]"


def _next_run(info: ScheduleInfo, now: datetime) -> str:
    if info.next_run is None:
        return "-"
    local = _local(info.next_run, info.timezone)
    if info.next_run <= now:
        return f"{local}\n[yellow]due {_span(now - info.next_run)} ago (no leader?)[/]"
    return f"{local}\n[dim]in {_span(info.next_run - now)}[/]"


def _last_run(info: ScheduleInfo, now: datetime) -> str:
    run = info.last_run
    if run is None:
        return "[dim]never[/]"
    state = run.state.value if run.state else None
    when = run.started_at or run.enqueued_at
    text = f"{_state(state)} {_local(when, info.timezone)}"
    if run.finished_at is not None:
        text += f", {_duration(run.duration)}"
    elif run.started_at is not None:
        text += f", for {_span(now - run.started_at)}"
    if run.trigger is not Trigger.SCHEDULE:
        text += f" [dim]({run.trigger.value})[/]"
    return text


def _status(info: ScheduleInfo) -> str:
    style = {"enabled": "green", "disabled": "yellow"}.get(info.status, "red")
    return f"[{style}]{info.status}[/]"


def _schedule(info: ScheduleInfo) -> str:
    text = escape(info.description)
    if info.overridden:
        code = escape(f"{info.code_expression} ({info.code_timezone})")
        text += f"\n[dim]operator's; code: {code}[/]"
    return text


def _success(info: ScheduleInfo) -> str:
    rate = info.success_rate
    if rate is None:
        return "-"
    return f"{rate:.0%} of {info.succeeded + info.failed}"


def _leader_line(leader: Leader) -> str:
    if leader.status == "leader":
        since = f" since {_local(leader.elected_at, 'UTC')}" if leader.elected_at else ""
        return f"[dim]cron leader: {escape(leader.leader or '?')}{since}[/]"
    if leader.status == "foreign":
        holder = escape(
            f"backend pid {leader.holder_pid}, role {leader.holder_role!r}, "
            f"application {leader.holder_application!r}"
        )
        return (
            f"[red]the cron leader key is held by a session no worker elected ({holder}); "
            "the next worker to try moves the election away from it[/]"
        )
    return "[yellow]no cron leader (no worker running with cron?)[/]"


def _print_schedules(infos: list[ScheduleInfo], leader: Leader) -> None:
    now = datetime.now(UTC)
    table = Table(box=None, pad_edge=False)
    for column in ("NAME", "STATUS", "SCHEDULE", "NEXT RUN", "LAST RUN", "SUCCESS"):
        table.add_column(column, no_wrap=column in ("NAME", "STATUS", "SUCCESS"))
    for info in infos:
        table.add_row(
            escape(info.name),
            _status(info),
            _schedule(info),
            _next_run(info, now),
            _last_run(info, now),
            _success(info),
        )
    out.print(table if infos else "no schedules (declare them with @app.cron / @app.every)")
    if infos:
        out.print(_leader_line(leader))


def _print_history(name: str, runs: list[Run]) -> None:
    if not runs:
        out.print(f"schedule {escape(name)!r} has not run yet")
        return
    table = Table(box=None, pad_edge=False)
    for column in (
        "JOB",
        "TRIGGER",
        "BY",
        "TICK / ENQUEUED",
        "STATE",
        "TRIES",
        "DURATION",
        "ERROR",
    ):
        table.add_column(column)
    for run in runs:
        state = run.state.value if run.state else None
        error = run.last_error if state not in ("succeeded", None) else None
        table.add_row(
            str(run.job_id),
            run.trigger.value,
            escape(run.triggered_by or "-"),
            _local(run.tick_at or run.enqueued_at, "UTC"),
            _state(state),
            str(run.attempts) if run.attempts else "-",
            _duration(run.duration),
            escape((error or "")[:80]),
        )
    out.print(table)


def _changed(info: ScheduleInfo, what: str) -> None:
    next_run = _local(info.next_run, info.timezone) if info.next_run else "-"
    out.print(
        f"schedule {escape(info.name)!r} {what}: {info.status}, "
        f"{escape(info.description)}; next run {next_run}"
    )


# ----------------------------------------------------------------------------- commands
@app.command("ls")
def ls(json_out: Json = False, dsn: Dsn = None, schema: Schema = "pgjobs") -> None:
    """List schedules: state, timing in words, next run, last run, success rate."""
    if json_out:
        infos = _call(dsn, schema, lambda admin: admin.schedules())
        out.print_json(data=[info.as_dict() for info in infos])
    else:
        infos, leader = _call(dsn, schema, lambda admin: (admin.schedules(), admin.leader()))
        _print_schedules(infos, leader)


@app.command()
def enable(name: Name, dsn: Dsn = None, schema: Schema = "pgjobs") -> None:
    """Fire the schedule again, from its next tick on."""
    _changed(_call(dsn, schema, lambda admin: admin.enable(name)), "enabled")


@app.command()
def disable(name: Name, dsn: Dsn = None, schema: Schema = "pgjobs") -> None:
    """Stop firing the schedule (survives deploys; `enable` undoes it)."""
    _changed(_call(dsn, schema, lambda admin: admin.disable(name)), "disabled")


@app.command("set")
def set_(
    name: Name,
    expression: Annotated[
        str,
        typer.Argument(
            metavar="EXPR", help="Cron expression, alias (@daily) or interval (@every 30s)."
        ),
    ],
    timezone: Annotated[
        str | None,
        typer.Option("--timezone", "--tz", help="IANA timezone (default: keep the current one)."),
    ] = None,
    dsn: Dsn = None,
    schema: Schema = "pgjobs",
) -> None:
    """Re-time the schedule at runtime, overriding the code (until `reset`)."""
    info = _call(dsn, schema, lambda admin: admin.set(name, expression, timezone=timezone))
    _changed(info, "re-timed")


@app.command()
def reset(name: Name, dsn: Dsn = None, schema: Schema = "pgjobs") -> None:
    """Drop the operator's timing: the code's expression and timezone apply again."""
    _changed(_call(dsn, schema, lambda admin: admin.reset(name)), "reset to the code's timing")


@app.command()
def trigger(
    name: Name,
    force: Annotated[
        bool, typer.Option("--force", help="Enqueue even if a run is queued or running.")
    ] = False,
    dsn: Dsn = None,
    schema: Schema = "pgjobs",
) -> None:
    """Enqueue a run of the schedule now (refused while one is queued or running)."""
    job_id = _call(
        dsn, schema, lambda admin: admin.trigger(name, force=force, source=Trigger.OPERATOR)
    )
    out.print(f"enqueued job {job_id} for schedule {escape(name)!r}")


@app.command()
def history(
    name: Name,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Runs to show.")] = 20,
    json_out: Json = False,
    dsn: Dsn = None,
    schema: Schema = "pgjobs",
) -> None:
    """The schedule's recent runs: who triggered them, state, attempts, duration."""
    runs = _call(dsn, schema, lambda admin: admin.history(name, limit=limit))
    if json_out:
        out.print_json(data=[run.as_dict() for run in runs])
    else:
        _print_history(name, runs)
