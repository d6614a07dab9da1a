"""A thread pool for sync handlers, cheaper per job than loop.run_in_executor.

Jobs go in through one SimpleQueue; results come back in batches through a single
call_soon_threadsafe per burst, instead of a concurrent Future and a loop callback per job.
Threads are daemons: a handler that never returns cannot keep the process alive.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

_STOP = None


class ThreadRunner:
    def __init__(self, size: int, name: str = "pgjobs-job"):
        self._size = size
        self._name = name
        self._inbox: queue.SimpleQueue[tuple[Callable[[], Any], asyncio.Future[Any]] | None] = (
            queue.SimpleQueue()
        )
        self._done: deque[tuple[asyncio.Future[Any], bool, Any]] = deque()
        self._lock = threading.Lock()
        self._delivery_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads: list[threading.Thread] = []

    def submit(self, fn: Callable[[], Any]) -> asyncio.Future[Any]:
        """Run `fn` on a pool thread; the returned future resolves on the calling loop."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            for n in range(self._size):
                thread = threading.Thread(target=self._work, name=f"{self._name}-{n}", daemon=True)
                thread.start()
                self._threads.append(thread)
        future: asyncio.Future[Any] = self._loop.create_future()
        self._inbox.put((fn, future))
        return future

    def _work(self) -> None:
        loop = self._loop
        assert loop is not None
        while (item := self._inbox.get()) is not _STOP:
            fn, future = item
            try:
                self._done.append((future, True, fn()))
            except BaseException as exc:
                self._done.append((future, False, exc))
            with self._lock:
                if self._delivery_scheduled:
                    continue
                self._delivery_scheduled = True
            try:
                loop.call_soon_threadsafe(self._deliver)
            except RuntimeError:  # the loop is closed: nobody waits for the result
                return

    def _deliver(self) -> None:
        with self._lock:
            self._delivery_scheduled = False
        while self._done:
            future, ok, value = self._done.popleft()
            if future.cancelled():
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    def shutdown(self) -> None:
        """Let idle threads exit; threads still in a handler finish it first."""
        for _ in self._threads:
            self._inbox.put(_STOP)
