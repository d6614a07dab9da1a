"""The worker's /healthz, /readyz and /metrics, fetched with urllib from real workers."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

import pgjobs
from pgjobs import FrozenClock, db
from pgjobs.worker import Worker, WorkerConfig
from pgjobs.worker.health import Check, DatabaseProbe, HealthServer, LoopHeartbeat

HERE = Path(__file__).resolve().parent
PGJOBS_BIN = Path(sys.executable).parent / "pgjobs"
WAIT = 20.0  # upper bound for anything that should happen promptly; never a speed assert
Conn = psycopg.Connection[Any]


def get(port: int, path: str) -> tuple[int, str]:
    """(status, body) of GET http://127.0.0.1:port/path."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def metrics(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    status, text = get(port, "/metrics")
    assert status == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return (name, frozenset(labels.items()))


def wait_for(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {WAIT}s waiting for {what}")
        time.sleep(0.02)


@contextmanager
def worker_thread(app: pgjobs.App, **settings: Any) -> Iterator[Worker]:
    """A worker with a health server on a free port, on its own thread and event loop, so
    that the test can watch it even while its loop is blocked."""
    worker = Worker(app, WorkerConfig(health_port=0, health_host="127.0.0.1", **settings))
    failure: list[BaseException] = []

    def run() -> None:
        try:
            worker.run(install_signal_handlers=False)
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run, name="test-worker")
    thread.start()
    try:
        wait_for(lambda: bool(failure) or worker.monitoring is not None, "the health server")
        assert not failure, failure
        wait_for(lambda: get(port_of(worker), "/readyz")[0] == 200, "readiness")
        yield worker
    finally:
        worker.stop()
        thread.join(WAIT)
    assert not thread.is_alive()
    assert not failure, failure
    assert worker.exit_code == 0


def port_of(worker: Worker) -> int:
    assert worker.monitoring is not None
    return worker.monitoring.server.port


# ------------------------------------------------------------------ in-process workers
def test_the_three_endpoints_of_a_running_worker(app: pgjobs.App) -> None:
    @app.task(name="health.ok", queue="email")
    def ok() -> None:
        pass

    @app.task(name="health.dies", queue="email", max_attempts=1)
    def dies() -> None:
        raise ValueError("no")

    with worker_thread(app, concurrency=4) as worker:
        port = port_of(worker)
        status, body = get(port, "/healthz")
        assert (status, json.loads(body)["status"]) == (200, "ok")
        status, body = get(port, "/readyz")
        ready = json.loads(body)
        assert (status, ready["status"]) == (200, "ok")
        assert f"worker {worker.session.worker_id} registered" in ready["detail"]
        assert "schema 'pgjobs' at version" in ready["detail"]
        assert get(port, "/nowhere")[0] == 404

        ok.enqueue_many([{}] * 3)
        dies.enqueue()
        labels = {"task": "health.ok", "queue": "email"}
        wait_for(
            lambda: metrics(port).get(key("pgjobs_jobs_total", outcome="succeeded", **labels)) == 3,
            "three successes in /metrics",
        )
        found = metrics(port)
        dead = key("pgjobs_jobs_total", task="health.dies", queue="email", outcome="dead")
        wait_for(lambda: metrics(port).get(dead) == 1, "the dead job in /metrics")
        assert found[key("pgjobs_job_duration_seconds_count", **labels)] == 3
        last = found[key("pgjobs_job_last_success_timestamp_seconds", task="health.ok")]
        assert abs(last - time.time()) < 3600
        assert found[key("pgjobs_worker_slots")] == 4
        assert found[key("pgjobs_worker_busy_slots")] == 0


def test_busy_slots_and_queue_depth_while_jobs_run(app: pgjobs.App) -> None:
    release = threading.Event()

    @app.task(name="health.wait", queue="work")
    def wait() -> None:
        release.wait(WAIT)

    app.enqueue("health.wait", queue="work")
    app.enqueue("health.wait", queue="work")
    try:
        with worker_thread(app, concurrency=2) as worker:
            port = port_of(worker)
            wait_for(lambda: metrics(port)[key("pgjobs_worker_busy_slots")] == 2, "2 busy")
            release.set()
            wait_for(lambda: metrics(port)[key("pgjobs_worker_busy_slots")] == 0, "0 busy")
    finally:
        release.set()


def test_the_queue_depth_read_at_start(app: pgjobs.App, db: Conn) -> None:
    app.enqueue("health.none", queue="backlog")
    app.enqueue("health.none", queue="backlog")
    app.admin.pause_queue("backlog")
    with worker_thread(app) as worker:
        port = port_of(worker)
        depth = key("pgjobs_queue_depth", queue="backlog", state="queued")
        wait_for(lambda: metrics(port).get(depth) == 2, "the backlog's depth")
        assert metrics(port)[key("pgjobs_queue_paused", queue="backlog")] == 1


def test_readyz_fails_while_the_schema_is_behind(app: pgjobs.App, db: Conn) -> None:
    with worker_thread(app) as worker:
        port = port_of(worker)
        with db.transaction():
            row = db.execute(
                "DELETE FROM pgjobs.migrations WHERE version = (SELECT max(version) FROM"
                " pgjobs.migrations) RETURNING version, name, applied_at"
            ).fetchone()
        assert row is not None
        try:
            status, body = get(port, "/readyz")
            assert status == 503
            assert "run `pgjobs migrate`" in json.loads(body)["detail"]
            assert get(port, "/healthz")[0] == 200  # alive all the same
        finally:
            db.execute("INSERT INTO pgjobs.migrations VALUES (%s, %s, %s)", row)
        assert get(port, "/readyz")[0] == 200


def test_healthz_detects_a_blocked_event_loop(app: pgjobs.App) -> None:
    unblock = threading.Event()
    blocked = threading.Event()

    @app.task(name="health.blocks_the_loop")
    async def blocks() -> None:
        blocked.set()
        unblock.wait(WAIT)  # a blocking call in an async handler: the loop stops

    try:
        with worker_thread(app, liveness_timeout=0.3) as worker:
            port = port_of(worker)
            app.enqueue("health.blocks_the_loop")
            wait_for(blocked.is_set, "the handler to block the loop")
            wait_for(lambda: get(port, "/healthz")[0] == 503, "/healthz to fail")
            _status, body = get(port, "/healthz")
            assert "event loop stalled" in json.loads(body)["detail"]
            unblock.set()
            wait_for(lambda: get(port, "/healthz")[0] == 200, "/healthz to recover")
    finally:
        unblock.set()


def test_two_workers_in_one_process_keep_their_metrics_apart(app: pgjobs.App) -> None:
    with worker_thread(app, concurrency=2) as first, worker_thread(app, concurrency=5) as second:
        assert port_of(first) != port_of(second)
        assert metrics(port_of(first))[key("pgjobs_worker_slots")] == 2
        assert metrics(port_of(second))[key("pgjobs_worker_slots")] == 5


# --------------------------------------------------------------------------- pieces
def test_loop_heartbeat_goes_stale_on_the_injected_clock() -> None:
    clock = FrozenClock()
    heartbeat = LoopHeartbeat(clock, timeout=30)
    assert heartbeat.check().ok
    clock.advance(29)
    assert heartbeat.check().ok
    clock.advance(2)
    check = heartbeat.check()
    assert not check.ok
    assert check.detail == "event loop stalled for 31.0s"
    heartbeat.beat()
    assert heartbeat.check().ok


@contextmanager
def loop_thread() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop running on its own thread, standing in for a worker's loop."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield loop
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(WAIT)
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()


def test_a_database_probe_reports_an_unreachable_server_without_the_password(
    app: pgjobs.App,
) -> None:
    dsn = f"postgresql://app:hunter2@127.0.0.1:{_free_port()}/app"
    with loop_thread() as loop:
        probe = DatabaseProbe(
            loop, lambda: db.connect_async(dsn), app.database.queries, lambda: dsn
        )
        check = probe.check()
    assert not check.ok
    assert check.detail.startswith("cannot talk to Postgres at 127.0.0.1:")
    assert "hunter2" not in check.detail
    assert probe.check() == Check(False, "the worker's event loop has stopped")


def test_a_database_probe_gives_up_on_a_stalled_loop_or_server(app: pgjobs.App, dsn: str) -> None:
    async def never() -> psycopg.AsyncConnection[Any]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    with loop_thread() as loop:
        probe = DatabaseProbe(loop, never, app.database.queries, lambda: dsn, timeout=0.2)
        assert probe.check() == Check(False, "no answer from the database within 0.2s")


def test_a_taken_port_is_a_clear_error_and_a_span_finds_the_next_one() -> None:
    from prometheus_client import CollectorRegistry

    alive = lambda: Check(True, "ok")  # noqa: E731
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        single = HealthServer(
            host="127.0.0.1", port=port, port_span=1, registry=CollectorRegistry(),
            liveness=alive, readiness=alive,
        )  # fmt: skip
        with pytest.raises(pgjobs.PgJobsError, match=f"port {port} already in use"):
            single.start()
        spanning = HealthServer(
            host="127.0.0.1", port=port, port_span=50, registry=CollectorRegistry(),
            liveness=alive, readiness=alive,
        )  # fmt: skip
        try:
            spanning.start()
            assert port < spanning.port < port + 50
            assert get(spanning.port, "/healthz")[0] == 200
        finally:
            spanning.stop()


# -------------------------------------------------------------------------- processes
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _free_port_pair() -> int:
    """A port P with P and P + 1 free (for the two children of --processes 2)."""
    for _ in range(50):
        port = _free_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise AssertionError("no two consecutive free ports")


def test_cli_worker_processes_each_serve_their_own_port(dsn: str) -> None:
    port = _free_port_pair()
    env = {**os.environ, "PGJOBS_DSN": dsn, "PYTHONPATH": str(HERE)}
    command = [str(PGJOBS_BIN), "worker", "procapp:app", "--processes", "2", "--concurrency",
               "3", "--health-port", str(port), "--health-host", "127.0.0.1",
               "--log-format", "json"]  # fmt: skip
    proc = subprocess.Popen(
        command, cwd=HERE, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:

        def both_ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"worker exited early: {proc.communicate()}")
            try:
                return all(get(p, "/readyz")[0] == 200 for p in (port, port + 1))
            except OSError:
                return False

        wait_for(both_ready, "both children to be ready")
        details = {
            json.loads(get(p, "/readyz")[1])["detail"].split(";")[0] for p in (port, port + 1)
        }
        assert len(details) == 2  # two different registered workers
        for p in (port, port + 1):
            assert get(p, "/healthz")[0] == 200
            assert metrics(p)[key("pgjobs_worker_slots")] == 3
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("{")]
    assert lines, stderr
    assert any("serving /healthz" in json.loads(line)["message"] for line in lines)
    assert all(json.loads(line)["level"] in {"INFO", "WARNING", "DEBUG"} for line in lines)
