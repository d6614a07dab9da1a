"""Applies the versioned migrations in sql/migrations under a lock on the migrations table."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from pgjobs import db
from pgjobs.errors import SchemaError
from pgjobs.queries import migrations, queries_for


def latest_version() -> int:
    return migrations()[-1].version


def apply_migrations(conn: psycopg.Connection[Any], schema: str) -> list[int]:
    """Bring `schema` up to the latest version; returns the versions applied (empty if none).

    Runs in one transaction holding a lock on the migrations table, so concurrent calls
    serialise and the second one finds nothing to do. Only the schema's owner (or a
    superuser) can take that lock: no producer or worker session can hold migrations up.
    """
    q = queries_for(schema)
    applied: list[int] = []
    with conn.transaction():
        cur = conn.cursor()
        db.check_server_version(_one(cur.execute(q["server_version"])))
        _create_migrations_table(conn, schema)
        cur.execute(q["migration_lock"])
        done = {row[0] for row in cur.execute(q["applied_migrations"])}
        newer = done - {m.version for m in migrations()}
        if newer:
            raise SchemaError(
                f"schema {schema!r} has migration(s) {sorted(newer)} that this pgjobs "
                f"does not know (it knows up to {latest_version()}): upgrade pgjobs"
            )
        for migration in migrations():
            if migration.version in done:
                continue
            cur.execute(
                sql.SQL("SET LOCAL search_path TO {}, pg_catalog").format(sql.Identifier(schema))
            )
            cur.execute(migration.text.encode())
            cur.execute(
                q["record_migration"], {"version": migration.version, "name": migration.name}
            )
            applied.append(migration.version)
    return applied


def _create_migrations_table(conn: psycopg.Connection[Any], schema: str) -> None:
    """Create the schema and its migrations table if missing.

    Two first migrations race here: the second CREATE waits for the first one's transaction
    and then fails on a catalog's unique index; once the first has committed, its objects
    are visible and the next attempt finds them (a rolled-back first leaves the way free).
    """
    cur = conn.cursor()
    for attempt in range(_CREATE_ATTEMPTS):
        try:
            with conn.transaction():  # a savepoint: the outer transaction survives a failure
                cur.execute(
                    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))
                )
                cur.execute(queries_for(schema)["create_migrations_table"])
            return
        except (
            psycopg.errors.UniqueViolation,
            psycopg.errors.DuplicateSchema,
            psycopg.errors.DuplicateTable,
            psycopg.errors.DuplicateObject,
        ):
            if attempt == _CREATE_ATTEMPTS - 1:
                raise


_CREATE_ATTEMPTS = 3


def current_version(conn: psycopg.Connection[Any], schema: str) -> int:
    """The schema's applied version, 0 when it was never migrated."""
    try:
        with conn.transaction():
            row = conn.execute(queries_for(schema)["schema_version"]).fetchone()
    except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
        return 0
    return int(row[0]) if row and row[0] is not None else 0


def check_schema(version: int, schema: str) -> None:
    """Raise SchemaError unless `version` is exactly what this code expects."""
    latest = latest_version()
    if version == 0:
        raise SchemaError(f"the pgjobs schema {schema!r} does not exist: run `pgjobs migrate`")
    if version < latest:
        raise SchemaError(
            f"the pgjobs schema {schema!r} is at version {version}, this code needs "
            f"{latest}: run `pgjobs migrate`"
        )
    if version > latest:
        raise SchemaError(
            f"the pgjobs schema {schema!r} is at version {version}, newer than this "
            f"pgjobs knows ({latest}): upgrade pgjobs"
        )


def _one(cur: psycopg.Cursor[Any]) -> int:
    row = cur.fetchone()
    assert row is not None
    return int(row[0])
