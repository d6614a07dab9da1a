"""A small threaded HTTP server that idle, slow or numerous clients cannot exhaust.

The standard library's ThreadingHTTPServer spends a thread on every connection for as long
as its client keeps it open, with no timeout: 400 idle connections held 400 threads. Here
one thread reads the request heads of every connection without blocking, under a deadline
for the whole head (a client trickling one byte at a time is dropped like an idle one), and
only complete requests reach a fixed pool of handler threads. Beyond `max_connections`
connections still sending, the oldest is dropped; beyond `max_queued` complete requests, a
new one is closed unanswered. Answers are HTTP/1.0: one request per connection.
"""

from __future__ import annotations

import io
import logging
import selectors
import socket
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

log = logging.getLogger("pgjobs.worker")

_HEAD_ENDS = (b"\r\n\r\n", b"\n\n")


@dataclass(frozen=True)
class Limits:
    # Seconds a client gets to send its request head, and again to read the answer.
    request_timeout: float = 5.0
    max_connections: int = 64  # connections still sending their request; the oldest goes beyond
    handler_threads: int = 4  # requests answered at once
    max_queued: int = 16  # complete requests being answered or waiting for a thread
    max_head: int = 8192  # bytes of request line and headers

    def __post_init__(self) -> None:
        if self.request_timeout <= 0:
            raise ValueError("request_timeout must be positive")
        if min(self.max_connections, self.handler_threads, self.max_queued, self.max_head) < 1:
            raise ValueError("the health server's limits must be >= 1")


class RequestHandler(BaseHTTPRequestHandler):
    """Answers one request whose head the server's I/O thread has already read; subclasses
    define `do_GET`. The connection is closed after the answer."""

    def __init__(self, sock: socket.socket, address: Any, head: bytes) -> None:
        # Not BaseRequestHandler.__init__: there is no socketserver, only this socket.
        self.request = sock
        self.connection = sock
        self.client_address = address
        self.rfile = io.BytesIO(head)
        self.wfile = sock.makefile("wb")
        try:
            self.handle()
        finally:
            self.finish()


@dataclass(eq=False)
class _Connection:
    sock: socket.socket
    address: Any
    deadline: float
    head: bytearray = field(default_factory=bytearray)


class BoundedHTTPServer:
    """Serves `handler` on a bound listening socket from one I/O thread and a fixed pool."""

    def __init__(
        self, listener: socket.socket, handler: type[RequestHandler], name: str, limits: Limits
    ):
        self.limits = limits
        self._listener = listener
        self._handler = handler
        self._name = name
        self._selector = selectors.DefaultSelector()
        self._wake_read, self._wake_write = socket.socketpair()
        # Connections still sending their head, oldest (first deadline) first; touched only
        # by the I/O thread.
        self._waiting: dict[socket.socket, _Connection] = {}
        self._answering: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(limits.max_queued)
        self._pool = ThreadPoolExecutor(limits.handler_threads, thread_name_prefix=name)
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._closing = False

    @property
    def address(self) -> Any:
        return self._listener.getsockname()

    @property
    def waiting(self) -> int:
        """Connections open and still sending their request."""
        return len(self._waiting)

    @property
    def answering(self) -> int:
        """Complete requests being answered or waiting for a handler thread."""
        with self._lock:
            return len(self._answering)

    def start(self) -> None:
        self._listener.setblocking(False)
        self._wake_read.setblocking(False)
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._selector.register(self._wake_read, selectors.EVENT_READ)
        self._thread.start()

    def stop(self) -> None:
        """Closes every connection; a handler still answering is cut off."""
        self._closing = True
        with suppress(OSError):
            self._wake_write.send(b"\0")
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            answering = list(self._answering)
        for sock in answering:  # wakes its handler thread, which closes it
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._wake_read.close()
        self._wake_write.close()

    # ------------------------------------------------------------------ the I/O thread
    def _serve(self) -> None:
        try:
            while not self._closing:
                self._serve_once()
        except Exception:
            log.exception("%s: the server thread failed; health checks stop answering", self._name)
        finally:
            for conn in list(self._waiting.values()):
                self._drop(conn)
            self._selector.close()
            self._listener.close()

    def _serve_once(self) -> None:
        timeout = None
        if self._waiting:
            timeout = max(0.0, self._oldest().deadline - time.monotonic())
        for key, _events in self._selector.select(timeout):
            if key.fileobj is self._listener:
                self._accept()
            elif key.fileobj is self._wake_read:
                return
            else:
                self._read(key.data)
        now = time.monotonic()
        while self._waiting and self._oldest().deadline <= now:
            self._drop(self._oldest())

    def _oldest(self) -> _Connection:
        return next(iter(self._waiting.values()))

    def _accept(self) -> None:
        for _ in range(self.limits.max_connections):  # the selector reports any more
            try:
                sock, address = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of file descriptors, say: make room
                log.debug("%s: accept failed: %s", self._name, exc)
                if self._waiting:
                    self._drop(self._oldest())
                else:
                    time.sleep(0.1)
                return
            sock.setblocking(False)
            if len(self._waiting) >= self.limits.max_connections:
                self._drop(self._oldest())
            conn = _Connection(sock, address, time.monotonic() + self.limits.request_timeout)
            self._waiting[sock] = conn
            self._selector.register(sock, selectors.EVENT_READ, conn)

    def _read(self, conn: _Connection) -> None:
        if self._waiting.get(conn.sock) is not conn:  # dropped earlier in this round
            return
        try:
            chunk = conn.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(conn)
            return
        if not chunk:
            self._drop(conn)
            return
        start = max(0, len(conn.head) - 3)  # an end split across two reads
        conn.head += chunk
        if any(conn.head.find(end, start) >= 0 for end in _HEAD_ENDS):
            self._forget(conn)
            self._dispatch(conn)
        elif len(conn.head) > self.limits.max_head:
            self._drop(conn)

    def _forget(self, conn: _Connection) -> None:
        if self._waiting.pop(conn.sock, None) is not None:
            with suppress(KeyError, ValueError):
                self._selector.unregister(conn.sock)

    def _drop(self, conn: _Connection) -> None:
        self._forget(conn)
        _close(conn.sock)

    def _dispatch(self, conn: _Connection) -> None:
        if not self._slots.acquire(blocking=False):
            _close(conn.sock)  # every thread busy and the queue full: refuse, do not pile up
            return
        with self._lock:
            self._answering.add(conn.sock)
        try:
            future = self._pool.submit(self._answer, conn)
        except RuntimeError:  # the pool is shut down: stopping
            self._done(conn.sock)
            return
        future.add_done_callback(lambda f: self._cancelled(f, conn.sock))

    def _cancelled(self, future: Future[None], sock: socket.socket) -> None:
        if future.cancelled():  # at stop, before a thread took it
            self._done(sock)

    # ------------------------------------------------------------------ handler threads
    def _answer(self, conn: _Connection) -> None:
        try:
            conn.sock.settimeout(self.limits.request_timeout)  # for writing the answer
            self._handler(conn.sock, conn.address, bytes(conn.head))
        except Exception as exc:  # a client that went away, or stop()
            log.debug("%s: %s", self._name, exc)
        finally:
            self._done(conn.sock)

    def _done(self, sock: socket.socket) -> None:
        with self._lock:
            self._answering.discard(sock)
        self._slots.release()
        _close(sock)


def _close(sock: socket.socket) -> None:
    with suppress(OSError):
        sock.close()
