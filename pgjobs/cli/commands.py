"""Top-level commands: migrate, worker, enqueue, bench, demo."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from pgjobs.cli.common import Dsn, Schema, err, fail, json_arg, out
from pgjobs.errors import PgJobsError

app = typer.Typer()


@app.command()
def migrate(dsn: Dsn = None, schema: Schema = "pgjobs") -> None:
    """Create or upgrade the pgjobs schema (safe to run concurrently and repeatedly)."""
    from pgjobs.app import App

    try:
        applied = App(dsn, schema).migrate()
    except PgJobsError as exc:
        raise fail(str(exc)) from None
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
    rescue_grace: Annotated[
        float,
        typer.Option(
            "--rescue-grace",
            min=0.1,
            help="Seconds a worker that lost its database session has to get it back "
            "before its running jobs are rescued (it stops them first).",
        ),
    ] = 5.0,
    health_port: Annotated[
        int | None,
        typer.Option(
            "--health-port",
            min=0,
            max=65535,
            help="Serve /healthz, /readyz and /metrics on this port (with --processes P: "
            "each process takes the first free port of PORT..PORT+P-1).",
        ),
    ] = None,
    health_host: Annotated[
        str,
        typer.Option(
            "--health-host",
            help="Address the health server listens on (no authentication: loopback by "
            "default; 0.0.0.0 for probes from outside, as in a container).",
        ),
    ] = "127.0.0.1",
    log_format: Annotated[
        str, typer.Option("--log-format", help="Log lines as 'text' or 'json'.")
    ] = "text",
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log every job (DEBUG).")
    ] = False,
    dsn: Dsn = None,
) -> None:
    """Run worker process(es) for the App at MODULE:APP."""
    import os

    from pgjobs import logs
    from pgjobs.loader import load_app
    from pgjobs.worker import Worker, WorkerConfig
    from pgjobs.worker.supervisor import Supervisor

    if dsn:
        os.environ["PGJOBS_DSN"] = dsn  # children and the App resolve it from there
    try:
        logs.configure(logging.DEBUG if verbose else logging.INFO, log_format)
        config = WorkerConfig(
            queues=queue or None,
            concurrency=concurrency,
            burst=burst,
            shutdown_grace=shutdown_grace,
            rescue_grace=rescue_grace,
            health_port=health_port,
            health_host=health_host,
            health_port_span=processes,
            log_format=log_format,
        )
        if processes == 1:
            runner = Worker(load_app(app_path), config)
            runner.run()
            raise typer.Exit(runner.exit_code)
        load_app(app_path)  # fail fast, before starting children
        code = Supervisor(app_path, config, processes, logging.root.level).run()
    except (PgJobsError, ValueError, TypeError) as exc:
        raise fail(str(exc)) from None
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

    parsed_kwargs = json_arg("--kwargs", kwargs, dict)
    parsed_args = json_arg("--args", args, list)
    try:
        job_id = App(dsn, schema).enqueue(
            task, parsed_args, parsed_kwargs, queue=queue, priority=priority, dedup_key=dedup_key
        )
    except (PgJobsError, TypeError, ValueError) as exc:
        raise fail(str(exc)) from None
    out.print(job_id)


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
    dsn: Annotated[
        str | None,
        typer.Option(
            "--dsn",
            envvar="PGJOBS_DSN",
            help="Postgres DSN to measure (else a throw-away embedded PostgreSQL).",
        ),
    ] = None,
) -> None:
    """Measure enqueue rate, drain rate and enqueue-to-start latency (no-op jobs).

    Uses the database of --dsn or $PGJOBS_DSN, else a throw-away embedded PostgreSQL.

    Works in a scratch schema, pgjobs_bench (never your jobs), dropped again at the end.
    """
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
        raise fail(str(exc)) from None
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
        raise fail(str(exc)) from None
