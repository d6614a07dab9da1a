"""The worker's /healthz, /readyz and /metrics, fetched with urllib from real workers."""

from __future__ import annotations

import asyncio
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import psycopg
import pytest
import typer.main
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

import pgjobs
from pgjobs import FrozenClock, db
from pgjobs.cli import app as cli_app
from pgjobs.worker import Worker, WorkerConfig
from pgjobs.worker.health import Check, DatabaseProbe, HealthServer, LoopHeartbeat
from pgjobs.worker.httpserver import BoundedHTTPServer, Limits

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
    worker = Worker(app, WorkerConfig(health_port=0, **settings))  # on loopback by default
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


# ------------------------------------------------------- exposure and hostile clients
def _non_loopback_address() -> str | None:
    """An address of this machine other than loopback, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: no packet is sent for UDP
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def test_the_endpoints_listen_on_loopback_by_default(app: pgjobs.App) -> None:
    assert WorkerConfig().health_host == "127.0.0.1"
    (option,) = (
        param
        for param in typer.main.get_command(cli_app).commands["worker"].params
        if param.name == "health_host"
    )
    assert option.default == "127.0.0.1"
    with worker_thread(app) as worker:  # WorkerConfig(health_port=0), no host given
        assert worker.monitoring is not None
        http = worker.monitoring.server.http
        assert http is not None
        assert http.address[0] == "127.0.0.1"
        other = _non_loopback_address()
        if other is not None:  # not reachable from another interface of this machine
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection((other, port_of(worker)), timeout=WAIT).close()


@contextmanager
def bare_server(
    limits: Limits, readiness: Callable[[], Check] | None = None
) -> Iterator[BoundedHTTPServer]:
    """A health server on a free loopback port with the given limits."""
    alive = lambda: Check(True, "ok")  # noqa: E731
    server = HealthServer(
        host="127.0.0.1", port=0, port_span=1, registry=CollectorRegistry(),
        liveness=alive, readiness=readiness or alive, limits=limits,
    )  # fmt: skip
    server.start()
    try:
        assert server.http is not None
        yield server.http
    finally:
        server.stop()


def _connect(http: BoundedHTTPServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", http.address[1]), timeout=WAIT)


def _closed_unanswered(sock: socket.socket) -> bool:
    """Waits (at most WAIT) for the server to close `sock`; True if it sent nothing."""
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True


def _idle(http: BoundedHTTPServer, count: int) -> list[socket.socket]:
    return [_connect(http) for _ in range(count)]


def test_idle_connections_take_no_thread_and_the_endpoints_still_answer() -> None:
    limits = Limits(request_timeout=600, max_connections=1000)
    with bare_server(limits) as http:
        threads = threading.active_count()
        socks = _idle(http, 400)
        try:
            wait_for(lambda: http.waiting == 400, "400 connections accepted")
            for path in ("/healthz", "/readyz", "/metrics"):
                assert get(http.address[1], path)[0] == 200, path
            assert http.waiting == 400  # still open, waiting for their requests
            # The stdlib server held a thread per connection: 400 more.
            assert threading.active_count() <= threads + limits.handler_threads
        finally:
            for sock in socks:
                sock.close()


def test_idle_connections_are_closed_after_the_request_timeout() -> None:
    # room for all 400: only the timeout can close them
    with bare_server(Limits(request_timeout=0.5, max_connections=1000)) as http:
        socks = _idle(http, 400)
        try:
            assert all(_closed_unanswered(sock) for sock in socks)
            wait_for(lambda: http.waiting == 0, "nothing left waiting")
        finally:
            for sock in socks:
                sock.close()


def test_beyond_max_connections_the_oldest_waiting_are_dropped() -> None:
    with bare_server(Limits(request_timeout=600, max_connections=8)) as http:
        socks = _idle(http, 20)
        try:
            assert all(_closed_unanswered(sock) for sock in socks[:12])
            wait_for(lambda: http.waiting == 8, "the 8 newest kept")
            assert get(http.address[1], "/healthz")[0] == 200
        finally:
            for sock in socks:
                sock.close()


@pytest.mark.parametrize("trickle", [False, True], ids=["stalls", "trickles"])
def test_a_slow_client_is_dropped_at_the_request_deadline(trickle: bool) -> None:
    """Slowloris: a partial request line, then silence or one byte at a time (each read
    within any per-read timeout, the whole head never done)."""
    with bare_server(Limits(request_timeout=1.0)) as http, _connect(http) as sock:
        sock.sendall(b"GET /heal")
        deadline = time.monotonic() + WAIT
        dropped = False
        while not dropped and time.monotonic() < deadline:
            readable, _, _ = select.select([sock], [], [], 0.1)
            if readable:
                dropped = _closed_unanswered(sock)
                assert dropped, "the server answered a partial request"
            elif trickle:
                try:
                    sock.sendall(b"t")
                except (BrokenPipeError, ConnectionResetError):
                    dropped = True
        assert dropped
        wait_for(lambda: http.waiting == 0, "the connection forgotten")


def test_an_endless_request_head_is_dropped() -> None:
    with bare_server(Limits(request_timeout=600, max_head=8192)) as http, _connect(http) as sock:
        with suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(b"GET /healthz HTTP/1.1\r\n" + b"X-Pad: " + b"a" * 20_000)
        assert _closed_unanswered(sock)


def test_handler_threads_are_bounded_and_excess_requests_refused() -> None:
    gate = threading.Event()

    def slow_readiness() -> Check:
        gate.wait(WAIT)
        return Check(True, "ok")

    limits = Limits(request_timeout=600, handler_threads=4, max_queued=16)
    with bare_server(limits, readiness=slow_readiness) as http:
        threads = threading.active_count()
        socks = [_connect(http) for _ in range(16)]
        try:
            for sock in socks:
                sock.sendall(b"GET /readyz HTTP/1.0\r\n\r\n")
            wait_for(lambda: http.answering == 16, "16 requests taken")
            with _connect(http) as extra:
                extra.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
                assert _closed_unanswered(extra)  # the 17th: refused, not queued
            assert threading.active_count() <= threads + 4
            gate.set()
            for sock in socks:
                reply = b""
                while chunk := sock.recv(4096):
                    reply += chunk
                assert reply.startswith(b"HTTP/1.0 200 "), reply
            wait_for(lambda: http.answering == 0, "every request answered")
            assert get(http.address[1], "/healthz")[0] == 200
        finally:
            gate.set()
            for sock in socks:
                sock.close()


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
