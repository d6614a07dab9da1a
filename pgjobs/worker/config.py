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
    # A worker that loses its session has the first 40% of rescue_grace to take its id back
    # (its jobs carry on), then stops their handlers (or exits, for sync ones). Its jobs are
    # rescued once rescue_grace has passed since a rescuer saw its lock gone: this is also
    # roughly how long a crashed worker's jobs wait.
    rescue_grace: float = 5.0
    prune_interval: float = 60.0
    history_retention: timedelta = timedelta(days=7)  # succeeded and cancelled jobs
    dead_retention: timedelta = timedelta(days=30)
    # Cron: every non-burst worker registers the app's schedules and competes for the
    # leader lock; the leader re-reads schedules at least every cron_interval seconds.
    cron: bool = True
    cron_interval: float = 1.0
    cron_leader_retry: float = 2.0  # how often a follower tries to take over
    cron_history_retention: timedelta = timedelta(days=90)  # finished runs in cron_runs
    # /healthz, /readyz and /metrics over HTTP when set (0: any free port). The worker takes
    # the first free port of health_port .. health_port + health_port_span - 1, so that
    # `--processes P` children share one configuration. The endpoints have no
    # authentication: they listen on loopback unless health_host says otherwise (a
    # container's probes need "0.0.0.0").
    health_port: int | None = None
    health_host: str = "127.0.0.1"
    health_port_span: int = 1
    liveness_timeout: float = 30.0  # /healthz fails once the event loop stalls this long
    log_format: str | None = None  # "text" or "json": reformat the root log handlers

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
        if self.rescue_grace <= 0:
            raise ValueError(f"rescue_grace must be positive, got {self.rescue_grace!r}")
        if self.cron_interval <= 0 or self.cron_leader_retry <= 0:
            raise ValueError("cron_interval and cron_leader_retry must be positive")
        if self.health_port is not None and not 0 <= self.health_port <= 65535:
            raise ValueError(f"health_port must be within 0..65535, got {self.health_port!r}")
        if self.health_port_span < 1:
            raise ValueError(f"health_port_span must be >= 1, got {self.health_port_span!r}")
        if self.liveness_timeout <= 0:
            raise ValueError("liveness_timeout must be positive")
        if self.log_format not in (None, "text", "json"):
            raise ValueError(f"log_format must be 'text' or 'json', got {self.log_format!r}")
