"""Worker settings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from pgjobs.job import check_name


@dataclass(frozen=True)
class WorkerConfig:
    """How one worker process claims and runs jobs. Times are in seconds."""

    queues: Sequence[str] | None = None  # None: every queue
    concurrency: int = 10
    burst: bool = False
    shutdown_grace: float = 30.0
    batch_size: int = 500  # most jobs claimed per round trip (also capped by free slots)
    poll_interval: float = 1.0  # fallback when no NOTIFY arrives; also re-reads paused queues
    heartbeat_interval: float = 5.0
    rescue_interval: float = 1.0
    prune_interval: float = 60.0
    history_retention: timedelta = timedelta(days=7)  # succeeded and cancelled jobs
    dead_retention: timedelta = timedelta(days=30)

    def __post_init__(self) -> None:
        if self.queues is not None:
            if isinstance(self.queues, str):
                raise TypeError("queues must be a list of queue names, not a string")
            if not self.queues:
                raise ValueError("queues must not be empty (use None for every queue)")
            for queue in self.queues:
                check_name("queue", queue)
        if not isinstance(self.concurrency, int) or self.concurrency < 1:
            raise ValueError(f"concurrency must be an int >= 1, got {self.concurrency!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size!r}")
        for name in ("shutdown_grace", "poll_interval", "heartbeat_interval", "rescue_interval"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
