"""The `pgjobs` command line: parses, calls the public API, renders. No SQL, no logic."""

from __future__ import annotations

import sys

import typer

from pgjobs.cli import commands

app = typer.Typer(no_args_is_help=True, add_completion=False, help="pgjobs: a Postgres job queue.")
app.registered_commands.extend(commands.app.registered_commands)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
