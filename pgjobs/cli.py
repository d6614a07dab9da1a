"""The `pgjobs` command line: parses, calls the public API, renders. No SQL, no logic."""

from __future__ import annotations

import json
import logging
import sys
from typing import Annotated, Any

import typer
from rich.console import Console

from pgjobs.errors import PgJobsError

app = typer.Typer(no_args_is_help=True, add_completion=False, help="pgjobs: a Postgres job queue.")
out = Console()
err = Console(stderr=True)

Dsn = Annotated[
    str | None,
    typer.Option("--dsn", envvar="PGJOBS_DSN", help="Postgres DSN (else libpq's PG* variables)."),
]
Schema = Annotated[str, typer.Option("--schema", help="Schema holding the pgjobs tables.")]


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(1)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@app.command()
def migrate(dsn: Dsn = None, schema: Schema = "pgjobs") -> None:
    """Create or upgrade the pgjobs schema (safe to run concurrently and repeatedly)."""
    from pgjobs.app import App

    try:
        applied = App(dsn, schema).migrate()
    except PgJobsError as exc:
        raise _fail(str(exc)) from None
    if applied:
        out.print(f"applied migration(s) {', '.join(map(str, applied))} to schema {schema!r}")
    else:
        out.print(f"schema {schema!r} is up to date")


@app.command()
def worker(
    app_path: Annotated[str, typer.Argument(metavar="MODULE:APP", help="Where the App lives.")],
    queue: Annotated[
        list[str] | None,
        typer.Option("--queue", "-q", help="Queue to serve (repeatable; default all)."),
    ] = None,
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-c", min=1, help="Jobs run at once per process.")
    ] = 10,
    processes: Annotated[
        int, typer.Option("--processes", "-p", min=1, help="Worker processes to run.")
    ] = 1,
    burst: Annotated[
        bool, typer.Option("--burst", help="Exit 0 once the queues hold no eligible job.")
    ] = False,
    shutdown_grace: Annotated[
        float,
        typer.Option(
            "--shutdown-grace", min=0, help="Seconds running jobs get to finish on SIGTERM."
        ),
    ] = 30.0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
    dsn: Dsn = None,
) -> None:
    """Run worker process(es) for the App at MODULE:APP."""
    import os

    from pgjobs.loader import load_app
    from pgjobs.worker import WorkerConfig
    from pgjobs.worker.supervisor import Supervisor

    _setup_logging(verbose)
    if dsn:
        os.environ["PGJOBS_DSN"] = dsn  # children and the App resolve it from there
    try:
        config = WorkerConfig(
            queues=queue or None,
            concurrency=concurrency,
            burst=burst,
            shutdown_grace=shutdown_grace,
        )
        if processes == 1:
            load_app(app_path).run_worker(
                config.queues, concurrency, burst, shutdown_grace=shutdown_grace
            )
            return
        load_app(app_path)  # fail fast, before starting children
        code = Supervisor(app_path, config, processes, logging.root.level).run()
    except (PgJobsError, ValueError, TypeError) as exc:
        raise _fail(str(exc)) from None
    raise typer.Exit(code)


@app.command()
def enqueue(
    task: Annotated[str, typer.Argument(help="Task name.")],
    kwargs: Annotated[
        str, typer.Option("--kwargs", help="Keyword arguments as a JSON object.")
    ] = "{}",
    args: Annotated[
        str, typer.Option("--args", help="Positional arguments as a JSON array.")
    ] = "[]",
    queue: Annotated[str | None, typer.Option("--queue")] = None,
    priority: Annotated[int | None, typer.Option("--priority")] = None,
    dedup_key: Annotated[str | None, typer.Option("--dedup-key")] = None,
    dsn: Dsn = None,
    schema: Schema = "pgjobs",
) -> None:
    """Enqueue a job by task name."""
    from pgjobs.app import App

    parsed_kwargs = _json_arg("--kwargs", kwargs, dict)
    parsed_args = _json_arg("--args", args, list)
    try:
        job_id = App(dsn, schema).enqueue(
            task, parsed_args, parsed_kwargs, queue=queue, priority=priority, dedup_key=dedup_key
        )
    except (PgJobsError, TypeError, ValueError) as exc:
        raise _fail(str(exc)) from None
    out.print(job_id)


def _json_arg(option: str, text: str, kind: type) -> Any:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _fail(f"{option} is not valid JSON: {exc}") from None
    if not isinstance(value, kind):
        expected = "an object" if kind is dict else "an array"
        raise _fail(f"{option} must be a JSON {expected}, got {type(value).__name__}")
    return value


@app.command()
def bench(
    jobs: Annotated[
        int, typer.Option("--jobs", "-n", min=1, help="Jobs per drain round.")
    ] = 20_000,
    workers: Annotated[
        int, typer.Option("--workers", "-w", min=1, help="Worker processes draining.")
    ] = 1,
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", min=1)] = 500,
    latency_samples: Annotated[int, typer.Option("--latency-samples", min=1)] = 200,
    rounds: Annotated[int, typer.Option("--rounds", min=1, help="Repeat and report medians.")] = 3,
    claim_scaling: Annotated[
        bool,
        typer.Option(
            "--claim-scaling", help="Also time claims with 10k/1M queued and 0/1M finished."
        ),
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
    dsn: Dsn = None,
) -> None:
    """Measure enqueue rate, drain rate and enqueue-to-start latency (no-op jobs)."""
    from pgjobs import bench as bench_mod

    try:
        with bench_mod.database(dsn) as target:
            report = bench_mod.run(
                target,
                jobs=jobs,
                workers=workers,
                concurrency=concurrency,
                latency_samples=latency_samples,
                rounds=rounds,
                claim_scaling=claim_scaling,
                progress=None if json_out else err.print,
            )
    except PgJobsError as exc:
        raise _fail(str(exc)) from None
    if json_out:
        out.print_json(data=report.as_dict())
    else:
        out.print(report.as_table())


@app.command()
def demo(
    dsn: Annotated[
        str | None, typer.Option("--dsn", help="Use this server instead of an embedded one.")
    ] = None,
    seconds: Annotated[
        float, typer.Option("--seconds", help="Stop after this long (default: until Ctrl-C).")
    ] = 0,
) -> None:
    """Watch jobs flow: embedded Postgres, two workers, a stream of example jobs."""
    from pgjobs import demo as demo_mod

    try:
        demo_mod.run(dsn, seconds=seconds or None, console=out)
    except PgJobsError as exc:
        raise _fail(str(exc)) from None


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
