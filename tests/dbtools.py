"""Database-level fault helpers shared by the integration and chaos tests."""

from __future__ import annotations

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo


def allow_connections(dsn: str, allow: bool) -> None:
    """Let new connections into the database of `dsn`, or refuse them all: an outage, as a
    worker trying to reconnect sees it (connections already open carry on)."""
    name = str(conninfo_to_dict(dsn)["dbname"])
    with psycopg.connect(make_conninfo(dsn, dbname="postgres"), autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}").format(
                sql.Identifier(name), sql.Literal(allow)
            )
        )
