"""`pgjobs jobs ls|show|retry|cancel|purge`."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from pgjobs.admin_models import JobDetail, JobSummary, format_duration, parse_duration
from pgjobs.cli import render
from pgjobs.cli.common import Dsn, Json, Schema, err, fail, out
from pgjobs.errors import PgJobsError
from pgjobs.states import JobState

app = typer.Typer(no_args_is_help=True, help="List, inspect, retry, cancel and purge jobs.")

JobId = Annotated[int, typer.Argument(metavar="ID", help="Job id.")]


@app.command("ls")
def list_jobs(
    state: Annotated[
        JobState | None, typer.Option("--state", "-s", help="Only jobs in this state.")
    ] = None,
    queue: Annotated[str | None, typer.Option("--queue", "-q", help="Only this queue.")] = None,
    task: Annotated[str | None, typer.Option("--task", "-t", help="Only this task.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="At most this many.")] = 50,
    json_out: Json = False,
    dsn: Dsn = None,
    schema: Schema = "pgjobs",
) -> None:
    """List jobs, newest first, unfinished and finished alike."""
    with render.admin_for(dsn, schema) as admin:
        jobs = admin.list_jobs(state=state, queue=queue, task=task, limit=limit)
    if json_out:
        render.print_json(jobs)
        return
    if not jobs:
        err.print("no jobs match")
        return
    now = admin.clock.now()
    rows = [
        (
            job.id,
            render.state(job.state),
            job.task,
            job.queue,
            _attempts(job.attempt, job.max_attempts),
            _when(job, now),
            render.shorten(job.last_error, 200),
        )
        for job in jobs
    ]
    columns = [">ID", "STATE", "TASK", "QUEUE", ">ATTEMPT", "WHEN", "~LAST ERROR"]
    out.print(render.table(None, columns, rows))


def _when(job: JobSummary, now: datetime) -> str:
    """The moment that matters for the job's state, relative to now."""
    if job.finished_at is not None:
        return f"{format_duration(now - job.finished_at)} ago"
    if job.state == JobState.RUNNING and job.started_at is not None:
        return f"running {format_duration(now - job.started_at)}"
    if job.run_at > now:
        return f"in {format_duration(job.run_at - now)}"
    return f"waiting {format_duration(now - job.run_at)}"


def _attempts(attempt: int, max_attempts: int | None) -> str:
    return f"{attempt}/{max_attempts}" if max_attempts else str(attempt)


@app.command()
def show(job_id: JobId, json_out: Json = False, dsn: Dsn = None, schema: Schema = "pgjobs") -> None:
    """Show one job: arguments, state, attempts and every error with its traceback."""
    with render.admin_for(dsn, schema) as admin:
        job = admin.get_job(job_id)
    if json_out:
        render.print_json(job)
        return
    _print_detail(job)


def _print_detail(job: JobDetail) -> None:
    fields = [
        ("id", job.id),
        ("task", job.task),
        ("queue", job.queue),
        ("state", render.state(job.state)),
        ("attempt", _attempts(job.attempt, job.max_attempts)),
        ("priority", job.priority),
        ("args", json.dumps(job.args, ensure_ascii=False)),
        ("kwargs", json.dumps(job.kwargs, ensure_ascii=False)),
        ("dedup key", job.dedup_key),
        ("enqueued", job.enqueued_at),
        ("run at", job.run_at),
        ("started", job.started_at),
        ("finished", job.finished_at),
        ("worker", job.worker_id),
    ]
    grid = render.table(None, ["FIELD", "VALUE"], fields)
    grid.show_header = False
    out.print(grid)
    if not job.errors:
        return
    out.print()
    out.print(f"[bold]errors[/bold] ({len(job.errors)})")
    for error in job.errors:
        head = Text()
        head.append(f"attempt {error.attempt if error.attempt is not None else '?'}", "bold")
        head.append(f"  {error.kind}", "red" if error.kind != "retried" else "cyan")
        head.append(f"  {render.text(error.at)}")
        if error.worker_id is not None:
            head.append(f"  worker {error.worker_id}")
        out.print(head)
        out.print(Text("  " + error.error))
        if error.traceback:
            out.print(Text(error.traceback.rstrip("\n")), style="dim", soft_wrap=True)


@app.command()
def retry(
    job_ids: Annotated[
        list[int] | None, typer.Argument(metavar="[ID]...", help="Dead or cancelled job ids.")
    ] = None,
    all_dead: Annotated[
        bool, typer.Option("--all-dead", help="Retry every dead job (of --queue, if given).")
    ] = False,
    queue: Annotated[
        str | None, typer.Option("--queue", "-q", help="With --all-dead: only this queue.")
    ] = None,
    json_out: Json = False,
    dsn: Dsn = None,
    schema: Schema = "pgjobs",
) -> None:
    """Queue dead or cancelled jobs again, their attempt count reset."""
    if all_dead == bool(job_ids):
        raise fail("give job ids or --all-dead (not both)")
    if queue is not None and not all_dead:
        raise fail("--queue goes with --all-dead")
    if all_dead:
        _retry_all(queue, json_out, dsn, schema)
        return
    assert job_ids is not None
    failures = 0
    retried = []
    with render.admin_for(dsn, schema) as admin:
        for job_id in job_ids:
            try:
                admin.retry_job(job_id)
            except PgJobsError as exc:
                failures += 1
                err.print(f"[red]error:[/red] {render.text(str(exc))}", soft_wrap=True)
                continue
            retried.append(job_id)
            if not json_out:
                out.print(f"job {job_id} queued again")
    if json_out:
        render.print_json({"retried": retried, "failed": failures})
    if failures:
        raise typer.Exit(1)


def _retry_all(queue: str | None, json_out: bool, dsn: str | None, schema: str) -> None:
    with render.admin_for(dsn, schema) as admin, _ProgressBar("retrying dead jobs") as update:
        report = admin.retry_dead(queue=queue, progress=update)
    if json_out:
        render.print_json(report)
        return
    where = f" in queue {queue!r}" if queue else ""
    out.print(f"{len(report.retried)} dead job(s){render.text(where)} queued again")
    for skip in report.skipped[:20]:
        err.print(
            f"[yellow]skipped[/yellow] job {skip.id}: unfinished job {skip.holder} holds its "
            "dedup_key"
        )
    if len(report.skipped) > 20:
        err.print(f"... and {len(report.skipped) - 20} more skipped for the same reason")


@app.command()
def cancel(
    job_ids: Annotated[list[int], typer.Argument(metavar="ID...", help="Queued job ids.")],
    dsn: Dsn = None,
    schema: Schema = "pgjobs",
) -> None:
    """Cancel queued jobs (a running job cannot be cancelled)."""
    failures = 0
    with render.admin_for(dsn, schema) as admin:
        for job_id in job_ids:
            try:
                admin.cancel_job(job_id)
            except PgJobsError as exc:
                failures += 1
                err.print(f"[red]error:[/red] {render.text(str(exc))}", soft_wrap=True)
                continue
            out.print(f"job {job_id} cancelled")
    if failures:
        raise typer.Exit(1)


@app.command()
def purge(
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than", help="Finished longer ago than this: 30m, 12h, 7d, 2w, 1d12h..."
        ),
    ],
    state: Annotated[
        list[JobState] | None,
        typer.Option("--state", "-s", help="Only this finished state (repeatable)."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only count what would be deleted.")
    ] = False,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Rows deleted per transaction.")
    ] = 10_000,
    json_out: Json = False,
    dsn: Dsn = None,
    schema: Schema = "pgjobs",
) -> None:
    """Delete finished jobs from history (workers also prune it: 7 days, dead 30 days)."""
    with render.handled():
        span = parse_duration(older_than)
    with render.admin_for(dsn, schema) as admin:
        if dry_run:
            count = admin.count_purgeable(span, state)
        else:
            with _ProgressBar("purging finished jobs") as update:
                count = admin.purge(span, state, batch_size=batch_size, progress=update)
    if json_out:
        render.print_json({"deleted": 0 if dry_run else count, "matching": count})
        return
    verb = "would delete" if dry_run else "deleted"
    out.print(f"{verb} {count} finished job(s) older than {format_duration(span)}")


class _ProgressBar:
    """A progress bar on stderr for (done, total) callbacks; quiet when nothing is done."""

    def __init__(self, label: str):
        self.bar = Progress(
            TextColumn(label),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        )
        self.task = self.bar.add_task(label, total=None)

    def __enter__(self) -> _ProgressBar:
        self.bar.start()
        return self

    def __call__(self, done: int, total: int) -> None:
        self.bar.update(self.task, completed=done, total=total)

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()
