"""The worker's HTTP endpoints: /healthz, /readyz and /metrics, served from threads.

- /healthz (liveness): the event loop is alive. A task on the loop beats every second;
  the server thread answers 503 once the last beat is older than the liveness timeout,
  so a loop blocked by a misbehaving handler is detected from outside it.
- /readyz (readiness): the worker is registered, not shutting down, Postgres answers and
  the schema is at the version this code needs.
- /metrics: the worker's Prometheus registry, in the format the scraper asks for.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from pgjobs import db
from pgjobs.clock import Clock
from pgjobs.errors import PgJobsError
from pgjobs.migrate import check_schema
from pgjobs.queries import Queries
from pgjobs.worker.httpserver import BoundedHTTPServer, Limits, RequestHandler
from pgjobs.worker.maintenance import Connect

log = logging.getLogger("pgjobs.worker")

BEAT_INTERVAL = 1.0
READY_TIMEOUT = 5.0  # seconds a readiness check may wait for the loop and the database
DEFAULT_LIMITS = Limits()  # 5 s to send a request, 64 connections waiting, 4 threads


@dataclass(frozen=True)
class Check:
    ok: bool
    detail: str


class LoopHeartbeat:
    """Proves the event loop runs: `run()` beats on the loop, `check()` reads from anywhere."""

    def __init__(self, clock: Clock, timeout: float, interval: float = BEAT_INTERVAL):
        self.clock = clock
        self.timeout = timeout
        self.interval = interval
        self._last = clock.monotonic()

    def beat(self) -> None:
        self._last = self.clock.monotonic()

    async def run(self) -> None:
        while True:
            self.beat()
            await asyncio.sleep(self.interval)

    def check(self) -> Check:
        stalled = self.clock.monotonic() - self._last
        if stalled > self.timeout:
            return Check(False, f"event loop stalled for {stalled:.1f}s")
        return Check(True, "event loop alive")


class DatabaseProbe:
    """Readiness of Postgres and the schema, asked on the worker's own event loop and
    maintenance connection: no extra connection, and a stalled loop is not ready either."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        connect: Connect,
        queries: Queries,
        dsn: Callable[[], str],
        timeout: float = READY_TIMEOUT,
    ):
        self._loop = loop
        self._connect = connect
        self.q = queries
        self._dsn = dsn
        self.timeout = timeout

    def check(self) -> Check:
        """Called from the server's thread; waits at most `timeout` seconds."""
        coro = self._version()
        try:
            future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        except RuntimeError:  # the loop is closed
            coro.close()
            return Check(False, "the worker's event loop has stopped")
        try:
            version = future.result(timeout=self.timeout)
            check_schema(version, self.q.schema)
        except TimeoutError:
            future.cancel()
            return Check(False, f"no answer from the database within {self.timeout:g}s")
        except PgJobsError as exc:
            return Check(False, str(exc))
        return Check(True, f"database reachable, schema {self.q.schema!r} at version {version}")

    async def _version(self) -> int:
        with db.errors_translated(self._dsn(), self.q.schema):
            conn = await self._connect()
            cur = await conn.execute(self.q["schema_version"])
            row = await cur.fetchone()
        return int(row[0]) if row and row[0] is not None else 0


class HealthServer:
    """Serves the three endpoints until `stop()`, from one I/O thread and a small pool of
    handler threads (see `pgjobs.worker.httpserver`): idle, slow or numerous clients are
    timed out or dropped and never cost a thread each."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        port_span: int,
        registry: CollectorRegistry,
        liveness: Callable[[], Check],
        readiness: Callable[[], Check],
        limits: Limits = DEFAULT_LIMITS,
    ):
        self.host = host
        self.first_port = port
        self.port_span = port_span
        self.registry = registry
        self.liveness = liveness
        self.readiness = readiness
        self.limits = limits
        self.http: BoundedHTTPServer | None = None

    @property
    def port(self) -> int:
        """The port actually bound (the first free one of the span; any one for port 0)."""
        assert self.http is not None, "the health server is not started"
        return int(self.http.address[1])

    def start(self) -> None:
        listener = self._bind()
        self.http = BoundedHTTPServer(listener, _handler_class(self), "pgjobs-health", self.limits)
        self.http.start()
        log.info("serving /healthz, /readyz and /metrics on %s:%s", self.host, self.port)

    def _bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        last_error: OSError | None = None
        ports = (
            [0]
            if self.first_port == 0
            else range(self.first_port, self.first_port + self.port_span)
        )
        for port in ports:
            try:
                return socket.create_server((self.host, port), family=family, backlog=128)
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise PgJobsError(
                        f"cannot serve health checks on {self.host}:{port}: {exc}"
                    ) from exc
                last_error = exc
        last = self.first_port + self.port_span - 1
        span = f"{self.first_port}" if last == self.first_port else f"{self.first_port}-{last}"
        raise PgJobsError(f"cannot serve health checks: port {span} already in use ({last_error})")

    def stop(self) -> None:
        http, self.http = self.http, None
        if http is not None:
            http.stop()


def _handler_class(health: HealthServer) -> type[RequestHandler]:
    class Handler(RequestHandler):
        server_version = "pgjobs"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                self._check(health.liveness())
            elif path == "/readyz":
                self._check(health.readiness())
            elif path == "/metrics":
                encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
                self._send(200, content_type, encoder(health.registry))
            else:
                self._send(
                    404,
                    "text/plain; charset=utf-8",
                    b"not found: try /healthz, /readyz or /metrics\n",
                )

        def _check(self, check: Check) -> None:
            body = json.dumps({"status": "ok" if check.ok else "fail", "detail": check.detail})
            self._send(200 if check.ok else 503, "application/json", body.encode() + b"\n")

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("health endpoint: " + format, *args)

    return Handler
