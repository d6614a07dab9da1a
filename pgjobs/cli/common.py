"""What every `pgjobs` command shares: consoles, common options, one-line errors."""

from __future__ import annotations

import json
import os
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

out = Console()
err = Console(stderr=True)
# Every DSN this command was given: `fail` scrubs their passwords from whatever it prints.
_dsns: list[str] = []


def _remember_dsn(value: str | None) -> str | None:
    if value and value not in _dsns:
        _dsns[:] = [*_dsns[-7:], value]  # in-process runs (tests) reuse the module
    return value


Dsn = Annotated[
    str | None,
    typer.Option(
        "--dsn",
        envvar="PGJOBS_DSN",
        help="Postgres DSN (else libpq's PG* variables).",
        callback=_remember_dsn,
    ),
]
Schema = Annotated[str, typer.Option("--schema", help="Schema holding the pgjobs tables.")]
Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def fail(message: str) -> typer.Exit:
    """Print one clear error line; `raise fail(...)` exits 1."""
    from pgjobs.dsn import scrub

    for dsn in [*_dsns, os.environ.get("PGJOBS_DSN", "")]:
        message = scrub(message, dsn, pieces=False)  # libpq's parts were scrubbed already
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(1)


def json_arg(option: str, text: str, kind: type) -> Any:
    """Parse a JSON command-line value of the given kind (dict or list) or fail clearly."""
    from pgjobs.limits import MAX_INT_DIGITS, MAX_JSON_DEPTH

    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise fail(f"{option} is not valid JSON: {exc}") from None
    except RecursionError:
        raise fail(
            f"{option} nests deeper than {MAX_JSON_DEPTH} levels of arrays/objects (the limit)"
        ) from None
    except ValueError:  # an integer over Python's int/str conversion limit
        raise fail(
            f"{option} holds an integer of more than {MAX_INT_DIGITS:,} digits (the limit)"
        ) from None
    if not isinstance(value, kind):
        expected = "object" if kind is dict else "array"
        raise fail(f"{option} must be a JSON {expected}, got {type(value).__name__}")
    return value
