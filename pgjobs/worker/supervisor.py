"""`pgjobs worker --processes P`: runs P worker processes and keeps them running.

A child that dies unexpectedly is restarted, with a growing delay while it keeps dying
young (its jobs are rescued by the others meanwhile). SIGTERM or SIGINT is passed on to
every child; a second one kills them at once. Children die with the supervisor.
"""

from __future__ import annotations

import asyncio
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
MAX_RESTART_DELAY = 60.0
HEALTHY_AFTER = 60.0  # a child that lived this long restarts without delay growth


def _child(app_path: str, config: WorkerConfig, log_level: int) -> None:
    import contextlib
    import ctypes
    import os

    from pgjobs.loader import load_app
    from pgjobs.worker.worker import Worker

    supervisor = os.getppid()
    os.setpgrp()  # a terminal's Ctrl-C reaches only the supervisor, which passes it on once
    with contextlib.suppress(OSError, AttributeError):  # Linux: SIGTERM when the supervisor dies
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != supervisor:  # it died before prctl took effect
        return
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    worker = Worker(load_app(app_path), config)
    worker.run()
    raise SystemExit(worker.exit_code)


def _exit_code(child: BaseProcess) -> int:
    code = child.exitcode or 0
    return 128 - code if code < 0 else code  # killed by signal N: 128 + N, as shells report


@dataclass
class _Slot:
    process: BaseProcess
    started: float
    delay: float = RESTART_DELAY
    signalled: int = 0


@dataclass
class Supervisor:
    app_path: str
    config: WorkerConfig
    processes: int
    log_level: int = logging.INFO

    def run(self) -> int:
        """Run the children until they stop; returns the exit code (0 unless one failed)."""
        self._preflight()
        ctx = multiprocessing.get_context("spawn")
        slots: dict[int, _Slot] = {}
        signals = 0

        def pass_on(slot: _Slot) -> None:
            if slot.process.is_alive() and slot.signalled < signals:
                slot.signalled = signals
                slot.process.kill() if signals > 1 else slot.process.terminate()

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            nonlocal signals
            signals += 1
            for slot in list(slots.values()):
                pass_on(slot)

        def start(number: int, delay: float) -> None:
            process = ctx.Process(
                target=_child,
                args=(self.app_path, self.config, self.log_level),
                name=f"pgjobs-worker-{number}",
            )
            slots[number] = slot = _Slot(process, time.monotonic(), delay)
            process.start()
            pass_on(slot)  # a signal that came while it started

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        codes: list[int] = []
        try:
            for number in range(self.processes):
                start(number, RESTART_DELAY)
            restarts: dict[int, tuple[float, float]] = {}  # slot -> (restart at, next delay)
            while slots or (restarts and not signals):
                time.sleep(0.2)
                now = time.monotonic()
                for number, slot in list(slots.items()):
                    if slot.process.is_alive():
                        continue
                    del slots[number]
                    code = _exit_code(slot.process)
                    if signals and slot.process.exitcode == -signal.SIGTERM:
                        code = 0  # stopped by our SIGTERM before it could handle it
                    if signals or (self.config.burst and code == 0):
                        codes.append(code)
                        continue
                    died_young = now - slot.started < HEALTHY_AFTER
                    wait = slot.delay if died_young else RESTART_DELAY
                    log.warning(
                        "worker process %s exited with %s; restarting in %.0fs",
                        slot.process.pid,
                        code,
                        wait,
                    )
                    restarts[number] = (now + wait, min(wait * 2, MAX_RESTART_DELAY))
                for number, (when, next_delay) in list(restarts.items()):
                    if now >= when and not signals:
                        del restarts[number]
                        start(number, next_delay)
            return next((code for code in codes if code != 0), 0)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _preflight(self) -> None:
        """Raise, once and here, what would make every child fail at start (a missing or
        outdated schema, an unreachable server), instead of restarting them forever."""
        from pgjobs.loader import load_app
        from pgjobs.worker.worker import Worker

        worker = Worker(load_app(self.app_path), self.config)
        asyncio.run(worker.check_schema())
