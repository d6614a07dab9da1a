"""The asyncio enqueue path against a real Postgres (plain tests around asyncio.run)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import psycopg
import pytest

import pgjobs


def _count(db: psycopg.Connection[Any]) -> int:
    row = db.execute("SELECT count(*) FROM pgjobs.jobs").fetchone()
    assert row is not None
    return int(row[0])


def _row(db: psycopg.Connection[Any], job_id: int) -> tuple[Any, ...]:
    row = db.execute(
        "SELECT task, queue, args, kwargs, priority, max_attempts, dedup_key"
        " FROM pgjobs.jobs WHERE id = %s",
        (job_id,),
    ).fetchone()
    assert row is not None, f"job {job_id} is not in pgjobs.jobs"
    return tuple(row)


@pytest.fixture
def build_report(app: pgjobs.App) -> pgjobs.Task[..., Any]:
    @app.task(name="reports.build", queue="reports", priority=2, max_attempts=3)
    async def build(report_id: int, fmt: str = "pdf") -> dict[str, Any]:
        return {"id": report_id, "fmt": fmt}

    return build


def test_enqueue_async_on_its_own_pool(
    app: pgjobs.App, build_report: pgjobs.Task[..., Any], db: psycopg.Connection[Any]
) -> None:
    async def main() -> tuple[int, int, int]:
        first = await build_report.enqueue_async(7, fmt="csv")
        second = await build_report.options(queue="urgent", priority=9).enqueue_async(8)
        by_name = await app.enqueue_async("remote.x", kwargs={"a": 1})
        return first, second, by_name

    try:
        first, second, by_name = asyncio.run(main())
    finally:
        app.close()
    assert all(type(i) is int for i in (first, second, by_name))
    assert _row(db, first) == ("reports.build", "reports", [7], {"fmt": "csv"}, 2, 3, None)
    assert _row(db, second) == ("reports.build", "urgent", [8], {}, 9, 3, None)
    assert _row(db, by_name) == ("remote.x", "default", [], {"a": 1}, 0, None, None)


def test_enqueue_async_in_an_async_transaction(
    build_report: pgjobs.Task[..., Any], dsn: str, db: psycopg.Connection[Any]
) -> None:
    async def main() -> int:
        async with await psycopg.AsyncConnection.connect(dsn) as aconn:
            await build_report.options(conn=aconn).enqueue_async(1)
            assert _count(db) == 0  # uncommitted: invisible to others
            await aconn.rollback()
            assert _count(db) == 0

            kept = await build_report.options(conn=aconn).enqueue_async(2)
            assert _count(db) == 0
            await aconn.commit()
            assert _count(db) == 1
            return kept

    kept = asyncio.run(main())
    assert _row(db, kept)[2] == [2]


def test_enqueue_async_in_a_transaction_block(
    build_report: pgjobs.Task[..., Any], dsn: str, db: psycopg.Connection[Any]
) -> None:
    async def failing_order(aconn: psycopg.AsyncConnection[Any]) -> None:
        async with aconn.transaction():
            await build_report.options(conn=aconn).enqueue_async(1)
            raise RuntimeError("order failed")

    async def main() -> int:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as aconn:
            with pytest.raises(RuntimeError, match="order failed"):
                await failing_order(aconn)
            async with aconn.transaction():
                return await build_report.options(conn=aconn).enqueue_async(2)

    kept = asyncio.run(main())
    assert db.execute("SELECT id, args FROM pgjobs.jobs").fetchall() == [(kept, [2])]


def test_enqueue_async_with_an_async_cursor(
    app: pgjobs.App, build_report: pgjobs.Task[..., Any], dsn: str, db: psycopg.Connection[Any]
) -> None:
    async def main() -> list[int]:
        async with await psycopg.AsyncConnection.connect(dsn) as aconn:
            async with aconn.cursor() as acur:
                one = await build_report.options(conn=acur).enqueue_async(1)
                two = await app.enqueue_async("remote.x", conn=acur)
                many = await build_report.enqueue_many_async([{"report_id": 3}], conn=acur)
                await acur.execute("SELECT count(*) FROM pgjobs.jobs")
                assert await acur.fetchone() == (3,)
            assert _count(db) == 0
            await aconn.commit()
            return [one, two, *many]

    ids = asyncio.run(main())
    assert sorted(r[0] for r in db.execute("SELECT id FROM pgjobs.jobs")) == sorted(ids)


def test_enqueue_many_async(
    app: pgjobs.App, build_report: pgjobs.Task[..., Any], dsn: str, db: psycopg.Connection[Any]
) -> None:
    items = [{"report_id": n, "fmt": f"f{n}"} for n in range(300)]

    async def main() -> tuple[list[int], list[int]]:
        own = await build_report.enqueue_many_async(items)
        async with await psycopg.AsyncConnection.connect(dsn) as aconn:
            await build_report.enqueue_many_async(items[:5], conn=aconn)
            await aconn.rollback()
            delayed = build_report.options(conn=aconn, queue="later", delay=timedelta(hours=1))
            joined = await delayed.enqueue_many_async(items[:2])
            assert _count(db) == 300
            await aconn.commit()
        return own, joined

    try:
        own, joined = asyncio.run(main())
    finally:
        app.close()
    assert len(own) == 300
    assert len(set(own)) == 300
    rows = dict(db.execute("SELECT id, kwargs FROM pgjobs.jobs").fetchall())
    assert [rows[i] for i in own] == items
    assert [rows[i] for i in joined] == items[:2]
    assert len(rows) == 302
    late = db.execute(
        "SELECT DISTINCT queue, run_at - enqueued_at FROM pgjobs.jobs WHERE id = ANY(%s)",
        (joined,),
    ).fetchall()
    assert late == [("later", timedelta(hours=1))]


def test_enqueue_many_async_with_a_bad_item_writes_nothing(
    app: pgjobs.App, build_report: pgjobs.Task[..., Any], db: psycopg.Connection[Any]
) -> None:
    async def main() -> None:
        with pytest.raises(TypeError, match="argument 'fmt' is not JSON serializable"):
            await build_report.enqueue_many_async([{"report_id": 1}, {"report_id": 2, "fmt": {1}}])
        with pytest.raises(TypeError, match="keyword-argument dicts"):
            await build_report.enqueue_many_async([{"report_id": 1}, 2])  # type: ignore[list-item]

    try:
        asyncio.run(main())
    finally:
        app.close()
    assert _count(db) == 0


def test_non_json_arguments_async(
    app: pgjobs.App, build_report: pgjobs.Task[..., Any], db: psycopg.Connection[Any]
) -> None:
    async def main() -> None:
        with pytest.raises(TypeError, match=r"'reports.build': argument 'fmt'"):
            await build_report.enqueue_async(1, fmt=object())
        with pytest.raises(TypeError, match=r"'remote.x': positional argument 0"):
            await app.enqueue_async("remote.x", [b"bytes"])

    asyncio.run(main())
    assert _count(db) == 0


def test_a_sync_connection_is_refused_by_enqueue_async(
    app: pgjobs.App, build_report: pgjobs.Task[..., Any], dsn: str, db: psycopg.Connection[Any]
) -> None:
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:

        async def main() -> None:
            for sync in (conn, cur):
                with pytest.raises(TypeError, match=r"enqueue\(\), not enqueue_async"):
                    await build_report.options(conn=sync).enqueue_async(1)
                with pytest.raises(TypeError, match=r"enqueue\(\), not enqueue_async"):
                    await build_report.enqueue_many_async([{"report_id": 1}], conn=sync)
                with pytest.raises(TypeError, match=r"enqueue\(\), not enqueue_async"):
                    await app.enqueue_async("remote.x", conn=sync)

        asyncio.run(main())
        conn.commit()
    assert _count(db) == 0


def test_async_dedup_returns_the_unfinished_job(
    app: pgjobs.App, build_report: pgjobs.Task[..., Any], db: psycopg.Connection[Any]
) -> None:
    async def main() -> list[int]:
        call = build_report.options(dedup_key="report:1")
        return [await call.enqueue_async(1), await call.enqueue_async(2)]

    try:
        first, second = asyncio.run(main())
    finally:
        app.close()
    assert first == second
    assert _row(db, first)[2:] == ([1], {}, 2, 3, "report:1")


def test_async_enqueue_without_the_schema_raises_schema_error(dsn: str) -> None:
    app = pgjobs.App(dsn, schema="missing_async")

    async def main() -> None:
        with pytest.raises(pgjobs.SchemaError, match="run `pgjobs migrate`"):
            await app.enqueue_async("remote.x")
        with pytest.raises(pgjobs.SchemaError, match="run `pgjobs migrate`"):
            await app.enqueue_async("remote.x")  # the pool survives the first failure

    try:
        asyncio.run(main())
    finally:
        app.close()


def test_async_listener_is_woken_after_commit(
    build_report: pgjobs.Task[..., Any], dsn: str
) -> None:
    async def main() -> tuple[str, str]:
        async with (
            await psycopg.AsyncConnection.connect(dsn, autocommit=True) as listener,
            await psycopg.AsyncConnection.connect(dsn) as producer,
        ):
            await listener.execute('LISTEN "pgjobs.jobs"')
            await build_report.options(conn=producer).enqueue_async(1)
            await producer.commit()
            async for note in listener.notifies(timeout=30, stop_after=1):
                return note.channel, note.payload
        raise AssertionError("no notification")

    assert asyncio.run(main()) == ("pgjobs.jobs", "reports")


def test_finished_event_loops_do_not_leave_connections_behind(
    app: pgjobs.App, build_report: pgjobs.Task[..., Any], db: psycopg.Connection[Any]
) -> None:
    def backends() -> int:
        row = db.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
        assert row is not None
        return int(row[0])

    before = backends()
    for n in range(4):
        asyncio.run(build_report.enqueue_async(n))
    try:
        assert backends() <= before + 1  # at most the last loop's pool
    finally:
        app.close()
