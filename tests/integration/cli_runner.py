"""Runs the `pgjobs` CLI in-process with typer's CliRunner, for the test_cli_* modules."""

from __future__ import annotations

import json
from typing import Any

from typer.testing import CliRunner, Result

from pgjobs.cli import app as cli_app

WIDE = {"COLUMNS": "200", "PGJOBS_DSN": None}  # wide tables; only --dsn names the database


def pgjobs(
    *args: str, dsn: str | None = None, expect: int = 0, shows_tracebacks: bool = False
) -> Result:
    """Run `pgjobs ARGS... [--dsn DSN]`; assert the exit code and that no traceback leaked
    (unless the command shows stored job tracebacks)."""
    argv = [*args, "--dsn", dsn] if dsn is not None else list(args)
    result = CliRunner().invoke(cli_app, argv, env=WIDE)
    detail = f"exit {result.exit_code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"the command raised {result.exception!r}\n{detail}")
    assert result.exit_code == expect, detail
    assert "Traceback" not in result.stderr, detail
    assert shows_tracebacks or "Traceback" not in result.stdout, detail
    return result


def pgjobs_json(*args: str, dsn: str) -> Any:
    """Run a listing with --json and parse its output (stored job tracebacks allowed)."""
    return json.loads(pgjobs(*args, "--json", dsn=dsn, shows_tracebacks=True).stdout)


def error_line(result: Result) -> str:
    """The one error line of a failed command."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]
