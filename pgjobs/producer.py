"""Enqueue I/O, sync and async. The parameters come from the pure layer in `pgjobs.job`.

With a caller's connection (or cursor) the statements join whatever transaction is open
there and are never committed here: the job exists if and only if the caller commits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeAlias

import psycopg
from psycopg.rows import tuple_row

from pgjobs.db import Database

SyncConn: TypeAlias = "psycopg.Connection[Any] | psycopg.Cursor[Any]"
AsyncConn: TypeAlias = "psycopg.AsyncConnection[Any] | psycopg.AsyncCursor[Any]"
AnyConn: TypeAlias = "SyncConn | AsyncConn"
RowBuilder = Callable[[Sequence[int], datetime], list[tuple[Any, ...]]]


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
    database: Database, count: int, build: RowBuilder, conn: AnyConn | None
) -> list[int]:
    if count == 0:
        return []
    if conn is None:
        with database.errors(), database.pool().connection() as own, own.transaction():
            return _copy(database, own, count, build)
    with database.errors():
        return _copy(database, _sync(conn), count, build)


def _copy(
    database: Database, conn: psycopg.Connection[Any], count: int, build: RowBuilder
) -> list[int]:
    q = database.queries
    with conn.cursor(row_factory=tuple_row) as cur:
        cur.execute(q["reserve_job_ids"], {"sequence": q.sequence("job_id_seq"), "n": count})
        ids, now = _row(cur.fetchone())
        rows = build(ids, now)  # validates every row before COPY starts
        with cur.copy(q["copy_jobs"]) as copy:
            for row in rows:
                copy.write_row(row)
    return list(ids)


async def enqueue_many_async(
    database: Database, count: int, build: RowBuilder, conn: AnyConn | None
) -> list[int]:
    if count == 0:
        return []
    with database.errors():
        if conn is None:
            async with (await database.async_pool()).connection() as own, own.transaction():
                return await _copy_async(database, own, count, build)
        return await _copy_async(database, _async(conn), count, build)


async def _copy_async(
    database: Database, conn: psycopg.AsyncConnection[Any], count: int, build: RowBuilder
) -> list[int]:
    q = database.queries
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(q["reserve_job_ids"], {"sequence": q.sequence("job_id_seq"), "n": count})
        ids, now = _row(await cur.fetchone())
        rows = build(ids, now)
        async with cur.copy(q["copy_jobs"]) as copy:
            for row in rows:
                await copy.write_row(row)
    return list(ids)


def _row(row: tuple[Any, ...] | None) -> tuple[Any, ...]:
    if row is None:  # pragma: no cover - the queries always return a row
        raise RuntimeError("query returned no row")
    return row


def _id(row: tuple[Any, ...] | None) -> int:
    return int(_row(row)[0])
