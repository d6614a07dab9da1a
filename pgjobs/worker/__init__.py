"""The worker daemon: claim, run and ack jobs; rescue and prune in the background."""

from pgjobs.worker.config import WorkerConfig
from pgjobs.worker.worker import Worker

__all__ = ["Worker", "WorkerConfig"]
