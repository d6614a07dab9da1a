"""Watches the worker's event loop from a thread, for the one fault the loop cannot see itself.

While the loop is blocked (an async handler that calls `time.sleep`, a SIGSTOP, a CPU-starved
host) the session task cannot notice that its connection died, and sync handlers keep running
in their threads. Past the rescue grace, another worker would start those jobs again. So a
thread checks: when the loop has not run for a while and the session's socket shows the
server closed it, and the loop still has not recovered once the reattach window has passed,
the process exits (EXIT_FENCED) before the rescue can hand its jobs out.

The loop side records its stalls, so that a session that finds its connection dead after a
stall dates the loss from the stall's start: a worker whose loop was blocked for longer
than its reattach window never takes its session back. When such a stall ends with the
session closed, the first tick stops the handlers at once (`on_resumed_lost`), before any of
them takes another step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
from collections.abc import Callable

log = logging.getLogger("pgjobs.worker")

TICK = 0.1  # how often the loop proves it runs, and the watchdog thread looks
STALL = 0.5  # a gap between ticks longer than this is a stall
RECENT = 2.0  # a stall that ended this recently is blamed for a connection loss


def socket_closed(fd: int) -> bool:
    """Whether the server has closed (or is closing) the connection on `fd`, without reading.

    EOF or a reset mean closed; a pending ErrorResponse ('E') on an idle connection is the
    server's FATAL goodbye (terminated backend, shutdown). Notifications ('A') and notices
    ('N') are not. Behind TLS only EOF and resets can be seen.
    """
    if fd < 0:
        return True
    try:
        with socket.socket(fileno=os.dup(fd)) as sock:
            head = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return False
    except OSError:
        return True
    return head in (b"", b"E")


class LoopWatch:
    """Ticks on the loop; a daemon thread acts on long stalls with a dead session socket."""

    def __init__(
        self,
        monotonic: Callable[[], float],
        *,
        reattach_window: float,
        session_fd: Callable[[], int],
        holds_jobs: Callable[[], bool],
        on_lost: Callable[[str], None],
        on_resumed_lost: Callable[[str], None],
    ):
        self._monotonic = monotonic
        self.reattach_window = reattach_window
        self._session_fd = session_fd
        self._holds_jobs = holds_jobs
        self._on_lost = on_lost
        self._on_resumed_lost = on_resumed_lost
        self.last_tick = monotonic()
        self.stall: tuple[float, float] | None = None  # (start, end) of the latest stall
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.last_tick = self._monotonic()
        self._tick()
        self._thread = threading.Thread(target=self._watch, name="pgjobs-watchdog", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._closed.set()
        if self._handle is not None:
            self._handle.cancel()

    def lost_since(self, now: float) -> float:
        """When a connection loss noticed at `now` may have happened: the start of a stall
        that ended recently (nothing was noticed during it), else `now`."""
        if self.stall is not None and now - self.stall[1] <= RECENT:
            return min(now, self.stall[0])
        return now

    # ----------------------------------------------------------------- loop side
    def _tick(self) -> None:
        now = self._monotonic()
        gap = now - self.last_tick
        if gap > STALL:
            self.stall = (self.last_tick, now)
            log.warning("the event loop was blocked for %.1fs", gap)
            # First thing after a long block (a SIGSTOP, say): timer callbacks like this one
            # run before any handler's next step, so handlers stopped here never go on.
            if gap > self.reattach_window and socket_closed(self._session_fd()):
                self._on_resumed_lost(
                    f"the event loop was blocked for {gap:.1f}s and the session connection "
                    "was closed meanwhile"
                )
        self.last_tick = now
        assert self._loop is not None
        self._handle = self._loop.call_later(TICK, self._tick)

    # --------------------------------------------------------------- thread side
    def _watch(self) -> None:
        dead_since: float | None = None
        while not self._closed.wait(TICK):
            now = self._monotonic()
            stalled = now - self.last_tick > STALL
            if not stalled:
                dead_since = None
                continue
            with contextlib.suppress(Exception):  # a probe that fails proves nothing
                if dead_since is None:
                    if socket_closed(self._session_fd()):
                        dead_since = now
                elif now - dead_since >= self.reattach_window and self._holds_jobs():
                    self._on_lost(
                        f"the event loop has been blocked for {now - self.last_tick:.1f}s and "
                        f"the session connection has been closed for {now - dead_since:.1f}s"
                    )
                    return
