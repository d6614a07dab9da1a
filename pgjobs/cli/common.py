"""What every `pgjobs` command shares: consoles, common options, one-line errors."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

out = Console()
err = Console(stderr=True)

Dsn = Annotated[
    str | None,
    typer.Option("--dsn", envvar="PGJOBS_DSN", help="Postgres DSN (else libpq's PG* variables)."),
]
Schema = Annotated[str, typer.Option("--schema", help="Schema holding the pgjobs tables.")]
Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def fail(message: str) -> typer.Exit:
    """Print one clear error line; `raise fail(...)` exits 1."""
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(1)


def json_arg(option: str, text: str, kind: type) -> Any:
    """Parse a JSON command-line value of the given kind (dict or list) or fail clearly."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise fail(f"{option} is not valid JSON: {exc}") from None
    if not isinstance(value, kind):
        expected = "object" if kind is dict else "array"
        raise fail(f"{option} must be a JSON {expected}, got {type(value).__name__}")
    return value
