"""Rendering for the operations commands: tables, JSON, and the one-line error wrapper."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from pgjobs.admin import Admin
from pgjobs.admin_models import format_duration
from pgjobs.cli.common import fail
from pgjobs.errors import PgJobsError


@contextmanager
def admin_for(dsn: str | None, schema: str) -> Iterator[Admin]:
    """The admin API of an App for `dsn`/`schema`; pgjobs errors become one-line exits."""
    from pgjobs.app import App

    with handled():
        app = App(dsn, schema)
        try:
            yield app.admin
        finally:
            app.close()


@contextmanager
def handled() -> Iterator[None]:
    """Turn pgjobs errors (and invalid values) into one clear line and exit code 1."""
    try:
        yield
    except (PgJobsError, ValueError) as exc:
        raise fail(str(exc)) from None


def jsonable(value: Any) -> Any:
    """Dataclasses, datetimes (ISO 8601), timedeltas (seconds) and enums as JSON values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    return value


def print_json(value: Any, *, compact: bool = False) -> None:
    """Exactly one JSON document on stdout (no markup, no wrapping)."""
    text = json.dumps(jsonable(value), indent=None if compact else 2, ensure_ascii=False)
    typer.echo(text)


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
    """A rich table. Column names may start with '>' (align right) or '~' (free text: cut
    short with an ellipsis, rather than wrapped, when the terminal is too narrow)."""
    result = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    free = [column.startswith("~") for column in columns]
    for column, is_free in zip(columns, free, strict=True):
        # Only free-text columns give way when space runs out; the others keep their width.
        result.add_column(
            column.lstrip(">~"),
            justify="right" if column.startswith(">") else "left",
            no_wrap=not is_free,
        )
    for row in rows:
        result.add_row(*(_cell(value, is_free) for value, is_free in zip(row, free, strict=True)))
    return result


def _cell(value: Any, free: bool) -> Text | str:
    if isinstance(value, Text):
        return value
    if free:  # one line, cut with an ellipsis
        return Text("-" if value is None else str(value), no_wrap=True, overflow="ellipsis")
    return text(value)


def text(value: Any) -> str:
    """A table cell: escaped for rich markup, '-' for None."""
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, Enum):
        return str(value.value)
    return escape(str(value))


def shorten(value: str | None, width: int = 60) -> str | None:
    """The first line of `value`, cut to `width` characters."""
    if not value or not value.strip():
        return None
    line = value.strip().splitlines()[0]
    return line if len(line) <= width else line[: width - 1] + "…"


STATE_STYLES = {
    "queued": "cyan",
    "running": "yellow",
    "succeeded": "green",
    "dead": "red",
    "cancelled": "dim",
}


def state(value: Enum | str) -> Text:
    name = value.value if isinstance(value, Enum) else value
    return Text(str(name), style=STATE_STYLES.get(str(name), ""))
