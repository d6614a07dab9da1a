"""Enqueue I/O, sync and async. The parameters come from the pure layer in `pgjobs.job`.

With a caller's connection (or cursor) the statements join whatever transaction is open
there and are never committed here: the job exists if and only if the caller commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager, nullcontext
from typing import Any, TypeAlias

import psycopg
from psycopg.rows import tuple_row

from pgjobs.db import Database

SyncConn: TypeAlias = "psycopg.Connection[Any] | psycopg.Cursor[Any]"
AsyncConn: TypeAlias = "psycopg.AsyncConnection[Any] | psycopg.AsyncCursor[Any]"
AnyConn: TypeAlias = "SyncConn | AsyncConn"
Batches: TypeAlias = "list[Sequence[str]]"

# One `enqueue_many` statement carries at most this many jobs and about this many characters
# of kwargs: bigger calls are split into several statements of one transaction.
BATCH_ROWS = 50_000
BATCH_CHARS = 16 * 1024 * 1024


def _sync(conn: AnyConn) -> psycopg.Connection[Any]:
    if isinstance(conn, psycopg.Cursor):
        return conn.connection
    if isinstance(conn, psycopg.Connection):
        return conn
    if isinstance(conn, psycopg.AsyncConnection | psycopg.AsyncCursor):
        raise TypeError("an async connection needs enqueue_async(), not enqueue()")
    raise TypeError(f"conn must be a psycopg Connection or Cursor, got {type(conn).__name__}")


def _async(conn: AnyConn) -> psycopg.AsyncConnection[Any]:
    if isinstance(conn, psycopg.AsyncCursor):
        return conn.connection
    if isinstance(conn, psycopg.AsyncConnection):
        return conn
    if isinstance(conn, psycopg.Connection | psycopg.Cursor):
        raise TypeError("a sync connection needs enqueue(), not enqueue_async()")
    raise TypeError(
        f"conn must be a psycopg AsyncConnection or AsyncCursor, got {type(conn).__name__}"
    )


def enqueue(database: Database, params: dict[str, Any], conn: AnyConn | None) -> int:
    query = database.queries["enqueue"]
    with database.errors():
        if conn is None:
            with database.pool().connection() as own:
                return _id(own.cursor(row_factory=tuple_row).execute(query, params).fetchone())
        with _sync(conn).cursor(row_factory=tuple_row) as cur:
            return _id(cur.execute(query, params).fetchone())


async def enqueue_async(database: Database, params: dict[str, Any], conn: AnyConn | None) -> int:
    query = database.queries["enqueue"]
    with database.errors():
        if conn is None:
            async with (await database.async_pool()).connection() as own:
                cur = await own.cursor(row_factory=tuple_row).execute(query, params)
                return _id(await cur.fetchone())
        async with _async(conn).cursor(row_factory=tuple_row) as acur:
            await acur.execute(query, params)
            return _id(await acur.fetchone())


def enqueue_many(
    database: Database, params: dict[str, Any], kwargs: Sequence[str], conn: AnyConn | None
) -> list[int]:
    """One job per encoded kwargs, all or none; returns the ids in order."""
    if not kwargs:
        return []
    parts = batches(kwargs)
    with database.errors():
        if conn is None:
            with database.pool().connection() as own, _atomic(own, len(parts)):
                return _insert_many(database, own, params, parts)
        sync = _sync(conn)
        with _atomic(sync, len(parts)):
            return _insert_many(database, sync, params, parts)


def _atomic(conn: psycopg.Connection[Any], statements: int) -> AbstractContextManager[Any]:
    # Several statements on an autocommit connection get a transaction (a savepoint inside
    # the caller's); otherwise they join the open transaction, never committed here.
    if statements > 1 and conn.autocommit:
        return conn.transaction()
    return nullcontext()


def _insert_many(
    database: Database, conn: psycopg.Connection[Any], params: dict[str, Any], parts: Batches
) -> list[int]:
    query = database.queries["enqueue_many"]
    ids: list[int] = []
    with conn.cursor(row_factory=tuple_row) as cur:
        for part in parts:
            ids.extend(_row(cur.execute(query, {**params, "kwargs": part}).fetchone())[0])
    return ids


async def enqueue_many_async(
    database: Database, params: dict[str, Any], kwargs: Sequence[str], conn: AnyConn | None
) -> list[int]:
    if not kwargs:
        return []
    parts = batches(kwargs)
    with database.errors():
        if conn is None:
            pool = await database.async_pool()
            async with pool.connection() as own, _atomic_async(own, len(parts)):
                return await _insert_many_async(database, own, params, parts)
        aconn = _async(conn)
        async with _atomic_async(aconn, len(parts)):
            return await _insert_many_async(database, aconn, params, parts)


def _atomic_async(
    conn: psycopg.AsyncConnection[Any], statements: int
) -> AbstractAsyncContextManager[Any]:
    if statements > 1 and conn.autocommit:
        return conn.transaction()
    return nullcontext()


async def _insert_many_async(
    database: Database, conn: psycopg.AsyncConnection[Any], params: dict[str, Any], parts: Batches
) -> list[int]:
    query = database.queries["enqueue_many"]
    ids: list[int] = []
    async with conn.cursor(row_factory=tuple_row) as cur:
        for part in parts:
            await cur.execute(query, {**params, "kwargs": part})
            ids.extend(_row(await cur.fetchone())[0])
    return ids


def batches(kwargs: Sequence[str]) -> Batches:
    """Split encoded kwargs into statements of at most BATCH_ROWS items and about
    BATCH_CHARS characters, so that no statement needs an unbounded parameter."""
    parts: Batches = []
    start = size = 0
    for index, text in enumerate(kwargs):
        if index > start and (index - start >= BATCH_ROWS or size + len(text) > BATCH_CHARS):
            parts.append(kwargs[start:index])
            start, size = index, 0
        size += len(text)
    parts.append(kwargs[start:])
    return parts


def _row(row: tuple[Any, ...] | None) -> tuple[Any, ...]:
    if row is None:  # pragma: no cover - the queries always return a row
        raise RuntimeError("query returned no row")
    return row


def _id(row: tuple[Any, ...] | None) -> int:
    return int(_row(row)[0])
