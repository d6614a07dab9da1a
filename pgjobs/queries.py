"""Loads the SQL shipped with the package: named queries and versioned migrations.

SQL lives in the top-level `sql/` folder, which the wheel carries as `pgjobs/_sql`.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from psycopg import sql

from pgjobs.errors import ConfigError

_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)
_MIGRATION = re.compile(r"^(\d{4})_(\w+)\.sql$")
_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,49}$")


def sql_root() -> Traversable:
    """The folder holding queries.sql and migrations/: packaged copy first, else the checkout."""
    packaged = resources.files("pgjobs") / "_sql"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "sql"


def check_schema_name(schema: str) -> str:
    if not isinstance(schema, str) or not _SCHEMA_NAME.match(schema):
        raise ConfigError(
            f"invalid schema name {schema!r}: use letters, digits and underscores "
            "(at most 50, not starting with a digit)"
        )
    return schema


@functools.cache
def _raw_queries() -> dict[str, str]:
    text = (sql_root() / "queries.sql").read_text(encoding="utf-8")
    parts = _NAME.split(text)
    # parts = [preamble, name1, body1, name2, body2, ...]
    found: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in found:
            raise RuntimeError(f"queries.sql defines {name!r} twice")
        found[name] = body.strip()
    return found


class Queries:
    """The named queries of queries.sql, rendered once for one schema."""

    def __init__(self, schema: str):
        self.schema = check_schema_name(schema)
        ident = sql.Identifier(schema)
        self._rendered = {
            name: sql.SQL(body).format(schema=ident).as_bytes(None)
            for name, body in _raw_queries().items()
        }

    def __getitem__(self, name: str) -> bytes:
        return self._rendered[name]

    def sequence(self, name: str) -> str:
        """The quoted, schema-qualified name of a sequence, for a ::regclass parameter."""
        return sql.Identifier(self.schema, name).as_string(None)

    def names(self) -> list[str]:
        return sorted(self._rendered)


@functools.cache
def queries_for(schema: str) -> Queries:
    return Queries(schema)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    text: str


@functools.cache
def migrations() -> tuple[Migration, ...]:
    """All migrations, in version order; versions must run 1, 2, 3... without gaps."""
    found = []
    for entry in (sql_root() / "migrations").iterdir():
        match = _MIGRATION.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise RuntimeError(f"migration versions must be contiguous, missing {expected:04d}")
    return tuple(found)
