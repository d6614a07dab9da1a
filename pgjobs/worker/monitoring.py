"""Wires one worker's metrics, loop heartbeat, queue depth reader and health server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from pgjobs.clock import Clock
from pgjobs.db import Database
from pgjobs.metrics import Metrics
from pgjobs.worker.config import WorkerConfig
from pgjobs.worker.depth import QueueDepthReader
from pgjobs.worker.health import Check, DatabaseProbe, HealthServer, LoopHeartbeat
from pgjobs.worker.maintenance import Connect


class Monitoring:
    """What `WorkerConfig.health_port` turns on. `metrics` is middleware for the worker's
    hooks; `services()` are the loops to run on the worker's event loop."""

    def __init__(
        self,
        config: WorkerConfig,
        clock: Clock,
        database: Database,
        *,
        busy_slots: Callable[[], float],
        state: Callable[[], Check],
    ):
        assert config.health_port is not None
        self.metrics = Metrics(clock=clock)
        self.metrics.track_slots(busy_slots, config.concurrency)
        self.heartbeat = LoopHeartbeat(clock, config.liveness_timeout)
        self._clock = clock
        self._queries = database.queries
        self.depth: QueueDepthReader | None = None
        self._database = database
        self.probe: DatabaseProbe | None = None  # once services() runs on the worker's loop
        self._state = state
        self.server = HealthServer(
            host=config.health_host,
            port=config.health_port,
            port_span=config.health_port_span,
            registry=self.metrics.registry,
            liveness=self.heartbeat.check,
            readiness=self.readiness,
        )

    def readiness(self) -> Check:
        """The worker's own state first (registered, not stopping), then the database."""
        state = self._state()
        if not state.ok:
            return state
        if self.probe is None:
            return Check(False, "starting")
        database = self.probe.check()
        return Check(database.ok, f"{state.detail}; {database.detail}")

    def services(self, connect: Connect) -> dict[str, Callable[[], Coroutine[Any, Any, None]]]:
        """The loops to run (and restart) on the worker's loop. `connect` gives the connection
        of the queue depth reader and of readiness checks: the worker's maintenance one."""
        self.depth = QueueDepthReader(
            self._queries, connect, self._clock, depth=self.metrics.queue_depth
        )
        database = self._database
        self.probe = DatabaseProbe(
            asyncio.get_running_loop(), connect, database.queries, lambda: database.dsn
        )
        return {"loop heartbeat": self.heartbeat.run, "queue depth": self.depth.loop}

    def start(self) -> None:
        self.server.start()

    async def close(self) -> None:
        await asyncio.to_thread(self.server.stop)
