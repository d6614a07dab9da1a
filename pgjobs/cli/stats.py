"""`pgjobs stats [--watch]`: queues, tasks, workers and long-running jobs at a glance."""

from __future__ import annotations

import contextlib
import time
from typing import Annotated

import typer
from rich.console import Group, RenderableType
from rich.live import Live
from rich.text import Text

from pgjobs.admin import Admin
from pgjobs.admin_models import Stats, format_duration, parse_duration
from pgjobs.cli import render
from pgjobs.cli.common import Dsn, Json, Schema, out
from pgjobs.cli.queues import queue_table
from pgjobs.errors import PgJobsError

app = typer.Typer()


@app.command()
def stats(
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="Refresh until Ctrl-C (a live dashboard).")
    ] = False,
    interval: Annotated[
        float, typer.Option("--interval", min=0, help="Seconds between refreshes.")
    ] = 2.0,
    iterations: Annotated[
        int, typer.Option("--iterations", min=0, help="With --watch: stop after N (0: never).")
    ] = 0,
    period: Annotated[
        str, typer.Option("--period", help="Task statistics over this recent span: 5m, 1h...")
    ] = "5m",
    json_out: Json = False,
    dsn: Dsn = None,
    schema: Schema = "pgjobs",
) -> None:
    """Show queues, per-task throughput, failures and run times, workers, running jobs."""
    with render.handled():
        span = parse_duration(period)
    with render.admin_for(dsn, schema) as admin:
        snapshot = admin.stats(span)
        if json_out:
            render.print_json(snapshot, compact=watch)
        elif not watch or not out.is_terminal:
            out.print(dashboard(snapshot))
        if watch:
            with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C ends a watch normally
                _watch(admin, snapshot, interval, iterations, json_out)


def _watch(admin: Admin, first: Stats, interval: float, iterations: int, json_out: bool) -> None:
    """Refresh every `interval` seconds. A failed refresh (say, Postgres restarting) is
    shown and retried; only the first read, made before, ends the command."""
    live = Live(dashboard(first), console=out, auto_refresh=False) if out.is_terminal else None
    if live is not None and not json_out:
        live.start()
    try:
        done = 1
        while iterations == 0 or done < iterations:
            time.sleep(interval)
            done += 1
            try:
                snapshot = admin.stats(first.period)
            except PgJobsError as exc:
                problem = Text(f"refresh failed, retrying: {exc}", style="red")
                if json_out:
                    render.print_json({"error": str(exc)}, compact=True)
                elif live is not None:
                    live.update(Group(dashboard(first), problem), refresh=True)
                else:
                    out.print(problem)
                continue
            first = snapshot
            if json_out:
                render.print_json(snapshot, compact=True)
            elif live is not None:
                live.update(dashboard(snapshot), refresh=True)
            else:
                out.print()
                out.print(dashboard(snapshot))
    finally:
        if live is not None and not json_out:
            live.stop()


def dashboard(snapshot: Stats) -> RenderableType:
    """The whole dashboard for one snapshot."""
    parts: list[RenderableType] = [
        Text(
            f"pgjobs at {render.text(snapshot.taken_at)} · tasks over the last "
            f"{format_duration(snapshot.period)}",
            style="bold",
        )
    ]
    if snapshot.queues:
        parts.append(queue_table("queues", snapshot.queues))
    else:
        parts.append(Text("no queues yet", style="dim"))
    parts.append(_tasks(snapshot) if snapshot.tasks else Text("no finished jobs", style="dim"))
    parts.append(_workers(snapshot))
    if snapshot.running:
        parts.append(_running(snapshot))
    return Group(*parts)


def _tasks(snapshot: Stats) -> RenderableType:
    columns = [
        "TASK", ">FINISHED", ">PER SEC", ">FAILED", ">RETRIES", ">P50", ">P95", ">P99", ">MAX"
    ]  # fmt: skip
    rows = [
        (
            t.task,
            t.finished,
            f"{t.per_second:.2f}",
            _percent(t.failure_rate),
            t.retries,
            format_duration(t.p50_seconds),
            format_duration(t.p95_seconds),
            format_duration(t.p99_seconds),
            format_duration(t.max_seconds),
        )
        for t in snapshot.tasks
    ]
    return render.table(f"tasks, last {format_duration(snapshot.period)}", columns, rows)


def _percent(rate: float | None) -> Text | str:
    if rate is None:
        return "-"
    return Text(f"{rate:.1%}", style="red" if rate > 0 else "")


def _workers(snapshot: Stats) -> RenderableType:
    workers = snapshot.workers
    if not workers:
        return Text("no workers running", style="yellow")
    busy = sum(w.running for w in workers)
    slots = sum(w.concurrency for w in workers)
    hosts = len({w.host for w in workers})
    stalest = max(w.heartbeat_age for w in workers)
    return Text(
        f"{len(workers)} worker(s) on {hosts} host(s), {busy}/{slots} slots busy, "
        f"oldest heartbeat {format_duration(stalest)} ago"
    )


def _running(snapshot: Stats) -> RenderableType:
    columns = [">ID", "TASK", "QUEUE", ">ATTEMPT", "WORKER", ">RUNTIME"]
    rows = [
        (
            job.id,
            job.task,
            job.queue,
            job.attempt,
            f"{job.worker_id} ({job.host}:{job.pid})" if job.host else f"{job.worker_id} (lost)",
            job.runtime,
        )
        for job in snapshot.running
    ]
    return render.table("longest running", columns, rows)
