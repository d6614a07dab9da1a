"""Talking to Postgres: DSNs, connections, pools and the translation of psycopg errors.

Every other module reaches the database through the helpers here, so that psycopg errors
become pgjobs errors in exactly one place and no message ever carries a password.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.types.json import set_json_loads
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from pgjobs.dsn import check as check_dsn
from pgjobs.dsn import describe, redact, scrub
from pgjobs.errors import ConfigError, DatabaseError, InvalidInput, SchemaError
from pgjobs.job import Undecodable

# Worker connections must notice a dead peer in seconds, not the kernel's two hours.
KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 15000,
}
CONNECT_TIMEOUT = 10
MIN_SERVER_VERSION = 140000  # PostgreSQL 14


def resolve_dsn(dsn: str | None) -> str:
    """The explicit DSN, else $PGJOBS_DSN, else "" (libpq's PGHOST, PGUSER... apply)."""
    if dsn is None:
        dsn = os.environ.get("PGJOBS_DSN", "")
    problem = check_dsn(dsn)  # cached: this runs on every use of a Database
    if problem:
        raise ConfigError(problem) from None
    return dsn


__all__ = ["describe", "redact", "scrub"]  # re-exported from pgjobs.dsn


def conninfo(dsn: str, *, application_name: str = "pgjobs", keepalives: bool = False) -> str:
    extra: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT}
    params = conninfo_to_dict(dsn)
    if "application_name" not in params and "PGAPPNAME" not in os.environ:
        extra["application_name"] = application_name
    if keepalives and not str(params.get("host", "")).startswith("/"):
        extra.update({k: v for k, v in KEEPALIVES.items() if k not in params})
    for key in list(extra):
        if key in params:
            del extra[key]
    return make_conninfo(dsn, **extra)


def lock_namespace(schema: str, purpose: str) -> int:
    """A 31-bit advisory-lock namespace unique to (schema, purpose)."""
    return zlib.crc32(f"pgjobs:{schema}:{purpose}".encode()) & 0x7FFFFFFF


def notify_channel(schema: str) -> str:
    return f"{schema}.jobs"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def translate(exc: psycopg.Error, dsn: str = "", schema: str | None = None) -> Exception:
    """The pgjobs error for a psycopg error (the caller raises it `from exc`)."""
    message = scrub(_first_line(exc), dsn)
    if isinstance(exc, pg_errors.InvalidParameterValue):
        # The SQL enqueue function's input limits (migration 0005) use this SQLSTATE.
        return InvalidInput(f"Postgres refused the job: {message}")
    if isinstance(
        exc,
        pg_errors.UndefinedTable
        | pg_errors.InvalidSchemaName
        | pg_errors.UndefinedFunction
        | pg_errors.UndefinedObject,
    ):
        name = schema or "pgjobs"
        return SchemaError(
            f"the pgjobs schema {name!r} is missing or out of date ({message}); "
            "run `pgjobs migrate`"
        )
    if isinstance(exc, psycopg.OperationalError) and _is_connection_trouble(exc.sqlstate):
        return DatabaseError(f"cannot talk to Postgres at {describe(dsn)}: {message}")
    return DatabaseError(f"Postgres refused the operation: {message}")


# SQLSTATEs of OperationalErrors that mean the connection, not the statement, failed: no
# server code (a client-side failure), connection exceptions (08), failed authentication
# (28), operator intervention on the session (57P: shutdown, cannot connect now), too many
# connections (53300) and system errors (58). Other OperationalErrors (54 program limit
# exceeded, 55 lock not available, 57014 statement cancelled...) are refusals.
def _is_connection_trouble(sqlstate: str | None) -> bool:
    return sqlstate is None or sqlstate.startswith(("08", "28", "57P", "58")) or sqlstate == "53300"


@contextmanager
def errors_translated(dsn: str = "", schema: str | None = None) -> Iterator[None]:
    """Re-raise psycopg errors in the block as pgjobs errors."""
    try:
        yield
    except psycopg.Error as exc:
        raise translate(exc, dsn, schema) from exc


def connect(
    dsn: str, *, autocommit: bool = True, keepalives: bool = False
) -> psycopg.Connection[Any]:
    with errors_translated(dsn):
        return psycopg.connect(conninfo(dsn, keepalives=keepalives), autocommit=autocommit)


async def connect_async(
    dsn: str, *, autocommit: bool = True, keepalives: bool = False
) -> psycopg.AsyncConnection[Any]:
    with errors_translated(dsn):
        return await psycopg.AsyncConnection.connect(
            conninfo(dsn, keepalives=keepalives), autocommit=autocommit
        )


def check_server_version(version_num: int) -> None:
    if version_num < MIN_SERVER_VERSION:
        major = version_num // 10000
        raise DatabaseError(
            f"PostgreSQL {major} is too old: pgjobs needs PostgreSQL "
            f"{MIN_SERVER_VERSION // 10000} or newer"
        )


class Database:
    """One app's view of Postgres: DSN, schema, rendered queries and lazily opened pools."""

    def __init__(self, dsn: str | None, schema: str, *, pool_size: int = 10):
        from pgjobs.queries import queries_for

        self._dsn_arg = dsn
        self.schema = schema
        self.queries = queries_for(schema)
        self.pool_size = pool_size
        self._pool: ConnectionPool | None = None
        self._async_pools: dict[asyncio.AbstractEventLoop, AsyncConnectionPool] = {}
        self._lock = threading.Lock()

    @property
    def dsn(self) -> str:
        # Resolved on use, so that PGJOBS_DSN set after the App was created still counts.
        return resolve_dsn(self._dsn_arg)

    @contextmanager
    def errors(self) -> Iterator[None]:
        with errors_translated(self.dsn, self.schema):
            yield

    def pool(self) -> ConnectionPool:
        with self._lock:
            if self._pool is None:
                dsn = self.dsn
                connect(dsn).close()  # a clear error now, not a pool timeout in 10 s
                pool = ConnectionPool(
                    conninfo(dsn),
                    min_size=1,
                    max_size=self.pool_size,
                    kwargs={"autocommit": True},
                    open=False,
                    name=f"pgjobs-{self.schema}",
                )
                with self.errors():
                    pool.open(wait=True, timeout=CONNECT_TIMEOUT)
                self._pool = pool
            return self._pool

    async def async_pool(self) -> AsyncConnectionPool:
        """The pool of the running event loop (a pool cannot outlive or change its loop)."""
        loop = asyncio.get_running_loop()
        for other in [key for key in self._async_pools if key is not loop and key.is_closed()]:
            _abandon(self._async_pools.pop(other))
        pool = self._async_pools.get(loop)
        if pool is None:
            dsn = self.dsn
            await (await connect_async(dsn)).close()  # a clear error now, not a pool timeout
            pool = AsyncConnectionPool(
                conninfo(dsn),
                min_size=1,
                max_size=self.pool_size,
                kwargs={"autocommit": True},
                open=False,
                name=f"pgjobs-{self.schema}-async",
            )
            with self.errors():
                await pool.open(wait=True, timeout=CONNECT_TIMEOUT)
            self._async_pools[loop] = pool
        return pool

    def close(self) -> None:
        """Close the sync pool and drop every async pool (see `aclose` for async code)."""
        with self._lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None
        while self._async_pools:
            _abandon(self._async_pools.popitem()[1])

    async def aclose(self) -> None:
        """Close the running loop's async pool properly, then everything else."""
        pool = self._async_pools.pop(asyncio.get_running_loop(), None)
        if pool is not None:
            await pool.close()
        self.close()


def _abandon(pool: AsyncConnectionPool) -> None:
    """Release a pool whose event loop is gone: its connections can only be shut at the
    libpq level, since nothing can await their close any more."""
    with suppress(Exception):
        for conn in list(getattr(pool, "_pool", ())):
            conn.pgconn.finish()


async def close_quietly(conn: psycopg.AsyncConnection[Any] | None) -> None:
    """Close a connection that may already be broken."""
    if conn is not None:
        with suppress(Exception):
            await conn.close()


_json_decode = json.JSONDecoder().decode


def _load_json(data: str | bytes) -> Any:
    # Most jobs carry no positional arguments or no keywords: skip the parser for those.
    if data == b"[]":
        return []
    if data == b"{}":
        return {}
    try:
        return _json_decode(data if isinstance(data, str) else bytes(data).decode())
    except (ValueError, RecursionError, MemoryError) as exc:
        # Nothing in a row may stop the claim: the job fails instead (see pgjobs.job).
        return Undecodable(f"{type(exc).__name__}: {_first_line(exc)[:200]}")


def use_fast_json(conn: psycopg.AsyncConnection[Any]) -> None:
    """Decode json/jsonb on `conn` without json.loads' per-call encoding detection; a value
    Python cannot decode (too deep, an integer of too many digits) loads as Undecodable."""
    set_json_loads(_load_json, conn)


def connection_shortage(exc: BaseException) -> str | None:
    """Which connection limit refused a connection, if that is what `exc` (or what it was
    raised from) is: the server's max_connections, or a role's or database's CONNECTION
    LIMIT. None for any other error."""
    while exc is not None:
        text = str(exc)
        if "too many connections for" in text:  # role "x" / database "y"
            return "the role's or database's CONNECTION LIMIT reached"
        if isinstance(exc, psycopg.Error) and exc.sqlstate == "53300":
            return "max_connections reached"
        if "too many clients" in text or "remaining connection slots" in text:
            return "max_connections reached"
        exc = exc.__cause__  # type: ignore[assignment]
    return None
