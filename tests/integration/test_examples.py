"""The examples/ folder, run against a real Postgres as a user would run them."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from pgjobs.testing import assert_enqueued, assert_not_enqueued, drain, enqueued_jobs

ROOT = Path(__file__).resolve().parents[2]
PGJOBS = Path(sys.executable).parent / "pgjobs"
LIMIT = 60.0  # seconds; generous bound for anything that should happen promptly
EXAMPLE_APPS = [
    "examples.webapp.jobs",
    "examples.sqlalchemy_orders.orders",
    "examples.multihost.jobs",
]


@pytest.fixture
def example_dsn(dsn: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The examples read $PGJOBS_DSN, as they would in production."""
    monkeypatch.setenv("PGJOBS_DSN", dsn)
    yield dsn
    for name in EXAMPLE_APPS:  # their Apps pool connections to this test's database
        module = sys.modules.get(name)
        if module is not None:
            module.app.close()


def _wait(check: Any, what: str) -> None:
    deadline = time.monotonic() + LIMIT
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {LIMIT:g}s waiting for {what}")
        time.sleep(0.05)


def _start(command: list[str], dsn: str, log: Path) -> subprocess.Popen[bytes]:
    """A `pgjobs` process run from the repository root (where `examples` lives)."""
    with log.open("wb") as out:
        env = {**os.environ, "PGJOBS_DSN": dsn}
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then wait; kill it if it does not exit within the limit (the test fails)."""
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=LIMIT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _count(db: psycopg.Connection[Any], table: str) -> int:
    row = db.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


# ------------------------------------------------------------------------------ web app
class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def shop(example_dsn: str) -> Iterator[str]:
    """The WSGI shop served on a free local port; yields its base URL."""
    from examples.webapp import wsgi

    with ConnectionPool(example_dsn, min_size=1, max_size=2) as pool:
        with pool.connection() as conn:
            wsgi.create_tables(conn)
        server = make_server("127.0.0.1", 0, wsgi.make_app(pool), handler_class=_QuietHandler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_port}"
        finally:
            server.shutdown()
            server.server_close()


def _http(url: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(request, timeout=LIMIT) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_webapp_order_and_receipt_job_commit_together(
    shop: str, db: psycopg.Connection[Any]
) -> None:
    from examples.webapp import jobs

    good = {"email": "a@b.c", "lines": [{"sku": "tea", "quantity": 2}]}
    status, body = _http(f"{shop}/orders", good)
    assert status == 201, body
    order_id = body["order_id"]
    job = assert_enqueued(jobs.app, jobs.send_receipt, order_id=order_id)
    assert job.queue == "email"

    # A line that breaks a CHECK after the enqueue: the transaction rolls back, job included.
    bad = {"email": "b@c.d", "lines": [{"sku": "tea", "quantity": 1}, {"sku": "x", "quantity": 0}]}
    status, body = _http(f"{shop}/orders", bad)
    assert status == 422, body
    assert "quantity" in body["error"]
    assert _count(db, "orders") == 1
    assert _count(db, "order_lines") == 1
    assert [j.id for j in enqueued_jobs(jobs.app, state=None)] == [job.id]

    status, body = _http(f"{shop}/orders/{order_id}")
    assert (status, body["receipt_sent"]) == (200, False)
    assert drain(jobs.app).succeeded == 1  # what `pgjobs worker examples.webapp.jobs:app` does
    status, body = _http(f"{shop}/orders/{order_id}")
    assert (status, body["receipt_sent"], body["email"]) == (200, True, "a@b.c")

    jobs.send_receipt(order_id)  # a second run (at-least-once delivery) changes nothing
    assert _count(db, "receipts") == 1
    assert _http(f"{shop}/orders/999")[0] == 404
    assert _http(f"{shop}/nowhere")[0] == 404
    assert _http(f"{shop}/healthz") == (200, {"ok": True})
    assert _http(f"{shop}/orders", {"lines": []})[0] == 400  # no email


def test_webapp_place_order_rolls_back_with_the_callers_transaction(
    example_dsn: str, db: psycopg.Connection[Any]
) -> None:
    from examples.webapp import jobs, wsgi

    wsgi.create_tables(db)
    placed: list[int] = []

    def checkout(conn: psycopg.Connection[Any]) -> None:
        with conn.transaction():
            placed.append(wsgi.place_order(conn, "c@d.e", [{"sku": "tea", "quantity": 1}]))
            assert_not_enqueued(jobs.app, jobs.send_receipt)  # not committed: invisible
            raise RuntimeError("payment provider said no")

    with psycopg.connect(example_dsn) as conn:
        with pytest.raises(RuntimeError, match="payment"):
            checkout(conn)
        assert len(placed) == 1
        assert _count(db, "orders") == 0
        assert enqueued_jobs(jobs.app, state=None) == []
        with conn.transaction():
            committed = wsgi.place_order(conn, "c@d.e", [])
    assert committed != placed[0]
    assert_enqueued(jobs.app, jobs.send_receipt, order_id=committed)


# --------------------------------------------------------------------------- SQLAlchemy
def test_sqlalchemy_job_commits_and_rolls_back_with_the_session(
    example_dsn: str, db: psycopg.Connection[Any]
) -> None:
    from sqlalchemy import URL
    from sqlalchemy.orm import Session

    from examples.sqlalchemy_orders import orders

    info = db.info
    url = URL.create(
        "postgresql+psycopg",
        username=info.user,
        password=info.password or None,
        host=info.host,
        port=info.port,
        database=info.dbname,
    )
    engine = orders.make_engine(url)  # a URL object: host may be a socket directory
    try:
        with Session(engine) as session:
            order = orders.place_order(session, "a@b.c")
            assert_not_enqueued(orders.app, orders.send_welcome)  # not committed yet
            session.commit()
            kept = order.id
        with Session(engine) as session:
            dropped = orders.place_order(session, "x@y.z").id
            session.rollback()
    finally:
        engine.dispose()

    assert_enqueued(orders.app, orders.send_welcome, order_id=kept)
    assert_not_enqueued(orders.app, orders.send_welcome, order_id=dropped)
    assert db.execute("SELECT array_agg(id) FROM sa_orders").fetchone() == ([kept],)
    assert drain(orders.app).succeeded == 1


# --------------------------------------------------------------------------------- cron
def test_cron_example_schedules_fire_in_a_real_worker(
    example_dsn: str, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    module = importlib.import_module("examples.cron.jobs")
    schedules = module.app.schedules
    assert set(schedules) == {"weekly-digest", "ping", "sweep"}
    assert schedules["weekly-digest"].timezone == "Europe/Paris"
    ping_task = schedules["ping"].task

    command = [str(PGJOBS), "worker", "examples.cron.jobs:app"]
    log = tmp_path / "worker.log"
    worker = _start(command, example_dsn, log)
    try:
        # The worker registers the code's schedules, then its leader enqueues the ticks.
        _wait(lambda: _count(db, "pgjobs.schedules") == 3, "the schedules to be registered")
        rows = db.execute("SELECT name, timezone FROM pgjobs.schedules ORDER BY name").fetchall()
        assert rows == [("ping", "UTC"), ("sweep", "UTC"), ("weekly-digest", "Europe/Paris")]
        finished = "SELECT count(*) FROM pgjobs.job_history WHERE task = %s AND state = 'succeeded'"
        _wait(
            lambda: db.execute(finished, (ping_task,)).fetchone() != (0,),
            "a tick of the 15-second schedule to run",
        )
    finally:
        _stop(worker)
    assert worker.returncode == 0, log.read_text()


# ---------------------------------------------------------------------------- multihost
def test_multihost_workers_share_the_jobs(
    example_dsn: str, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    from examples.multihost import jobs

    jobs.create_table(db)
    command = [str(PGJOBS), "worker", "examples.multihost.jobs:app", "--concurrency", "4"]
    logs = [tmp_path / f"worker{n}.log" for n in range(2)]
    workers = [_start(command, example_dsn, log) for log in logs]
    try:
        _wait(lambda: _count(db, "pgjobs.workers") == 2, "two workers to register")
        ids = jobs.make_thumbnail.enqueue_many({"image_id": n} for n in range(200))
        _wait(lambda: _count(db, "pgjobs.job_history") == 200, "200 jobs to finish")
    finally:
        for worker in workers:
            _stop(worker)

    assert [worker.returncode for worker in workers] == [0, 0], [log.read_text() for log in logs]
    rows = db.execute("SELECT image_id, pid, job_id FROM thumbnails ORDER BY image_id").fetchall()
    assert [row[0] for row in rows] == list(range(200))
    assert sorted(row[2] for row in rows) == sorted(ids)  # each job ran, once
    assert {row[1] for row in rows} == {worker.pid for worker in workers}  # both took part
    states = db.execute("SELECT DISTINCT state::text FROM pgjobs.job_history").fetchall()
    assert states == [("succeeded",)]
