"""`pgjobs worker --processes P`: runs P worker processes and keeps them running.

A child that dies unexpectedly is restarted (its jobs are rescued by the others). SIGTERM
or SIGINT is passed on to every child; a second one kills them at once.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import time
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from types import FrameType

from pgjobs.worker.config import WorkerConfig

log = logging.getLogger("pgjobs.worker")

RESTART_DELAY = 1.0


def _child(app_path: str, config: WorkerConfig, log_level: int) -> None:
    import os

    from pgjobs.loader import load_app
    from pgjobs.worker.worker import Worker

    os.setpgrp()  # a terminal's Ctrl-C reaches only the supervisor, which passes it on once
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    worker = Worker(load_app(app_path), config)
    worker.run()
    raise SystemExit(worker.exit_code)


@dataclass
class Supervisor:
    app_path: str
    config: WorkerConfig
    processes: int
    log_level: int = logging.INFO

    def run(self) -> int:
        self._preflight()
        ctx = multiprocessing.get_context("spawn")
        children: dict[int, BaseProcess] = {}
        signals = 0

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            nonlocal signals
            signals += 1
            for child in children.values():
                if child.pid is not None and child.is_alive():
                    child.kill() if signals > 1 else child.terminate()

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}

        def start(slot: int) -> None:
            child = ctx.Process(
                target=_child,
                args=(self.app_path, self.config, self.log_level),
                name=f"pgjobs-worker-{slot}",
            )
            child.start()
            children[slot] = child

        try:
            for slot in range(self.processes):
                start(slot)
            codes: dict[int, int] = {}
            while children:
                time.sleep(0.2)
                for slot, child in list(children.items()):
                    if child.is_alive():
                        continue
                    code = child.exitcode or 0
                    del children[slot]
                    if signals or (self.config.burst and code == 0):
                        codes[slot] = code
                        continue
                    log.warning("worker process %s exited with %s; restarting", child.pid, code)
                    time.sleep(RESTART_DELAY)
                    if not signals:
                        start(slot)
            return max(codes.values(), default=0)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _preflight(self) -> None:
        """Raise, once and here, what would make every child fail at start (a missing or
        outdated schema, an unreachable server), instead of restarting them forever."""
        import asyncio

        from pgjobs.loader import load_app
        from pgjobs.worker.worker import Worker

        worker = Worker(load_app(self.app_path), self.config)
        asyncio.run(worker._check_schema(worker.database.dsn))
