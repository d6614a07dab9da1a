"""`pgjobs workers ls` through typer's CliRunner, with a real worker running."""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any

import psycopg
from cli_runner import pgjobs, pgjobs_json
from worker_harness import running_worker

import pgjobs as pgj
from pgjobs.worker import WorkerConfig

Conn = psycopg.Connection[Any]


def test_ls_lists_live_workers_with_heartbeats(app: pgj.App, dsn: str) -> None:
    assert pgjobs_json("workers", "ls", dsn=dsn) == []
    assert "no workers running" in pgjobs("workers", "ls", dsn=dsn).stderr

    async def main() -> tuple[object, str, int | None]:
        config = WorkerConfig(queues=["email", "sms"], concurrency=3)
        async with running_worker(app, config) as worker:
            listed = await asyncio.to_thread(pgjobs_json, "workers", "ls", dsn=dsn)
            table = await asyncio.to_thread(lambda: pgjobs("workers", "ls", dsn=dsn).stdout)
            return listed, table, worker.session.worker_id

    listed, table, worker_id = asyncio.run(main())
    assert isinstance(listed, list)
    assert len(listed) == 1
    [entry] = listed
    assert entry["id"] == worker_id
    assert (entry["host"], entry["pid"]) == (socket.gethostname(), os.getpid())
    assert (entry["queues"], entry["concurrency"], entry["running"]) == (["email", "sms"], 3, 0)
    assert 0 <= entry["heartbeat_age"] < 60
    assert "email, sms" in table
    assert "0/3" in table
    assert pgjobs_json("workers", "ls", dsn=dsn) == []  # unregistered at shutdown
    assert entry["lost_at"] is None
    assert " ok" in table


def test_ls_shows_a_worker_whose_session_is_lost(app: pgj.App, dsn: str, db: Conn) -> None:
    db.execute(
        "INSERT INTO pgjobs.workers (id, host, pid, concurrency, lost_at, protocol)"
        " VALUES (7, 'h', 1, 1, '2031-03-14 12:34:56+00', 2)"
    )
    [entry] = pgjobs_json("workers", "ls", dsn=dsn)  # type: ignore[misc]
    assert entry["lost_at"].startswith("2031-03-14")
    assert "lost since" in pgjobs("workers", "ls", dsn=dsn).stdout


def test_ls_names_a_foreign_holder_of_a_workers_lock(app: pgj.App, dsn: str, db: Conn) -> None:
    """Any role can take a worker's advisory lock: ls shows who holds it when it is not the
    worker's own session (rescuers then treat the worker as lost)."""
    namespace = pgj.db.lock_namespace("pgjobs", "worker")
    db.execute(
        "INSERT INTO pgjobs.workers (id, host, pid, concurrency, session_pid, lock_namespace,"
        " protocol) VALUES (8, 'h', 1, 1, 1, %s, 2)",
        (namespace,),
    )
    with psycopg.connect(dsn, autocommit=True) as spoofer:
        spoofer.execute("SELECT pg_advisory_lock(%s)", ((namespace << 32) | 8,))
        [entry] = pgjobs_json("workers", "ls", dsn=dsn)  # type: ignore[misc]
        assert (entry["session"], entry["lock_holder_pid"]) == (
            "foreign",
            spoofer.info.backend_pid,
        )
        table = pgjobs("workers", "ls", dsn=dsn).stdout
        assert f"foreign backend {spoofer.info.backend_pid}" in " ".join(table.split())
