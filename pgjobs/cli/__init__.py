"""The `pgjobs` command line: parses, calls the public API, renders. No SQL, no logic."""

from __future__ import annotations

import sys

import typer

from pgjobs.cli import commands, cron, jobs, queues, stats, workers

app = typer.Typer(no_args_is_help=True, add_completion=False, help="pgjobs: a Postgres job queue.")
app.registered_commands.extend(commands.app.registered_commands)
app.add_typer(cron.app, name="cron")
app.registered_commands.extend(stats.app.registered_commands)
app.add_typer(jobs.app, name="jobs")
app.add_typer(queues.app, name="queues")
app.add_typer(workers.app, name="workers")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
