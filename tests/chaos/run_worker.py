"""Runs one pgjobs worker process for `chaosapp:app` with settings the CLI does not expose.

    python run_worker.py --queue wake --poll-interval 3600

The chaos tests use it where a test must rule out the polling fallback: with a poll interval
of an hour, a job that starts within seconds was woken by a NOTIFY.
"""

from __future__ import annotations

import argparse
import logging
import sys

from pgjobs.loader import load_app
from pgjobs.worker import Worker, WorkerConfig


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--app", default="chaosapp:app")
    parser.add_argument("--queue", action="append")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--poll-interval", type=float, default=1.0)
    parser.add_argument("--shutdown-grace", type=float, default=30.0)
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = WorkerConfig(
        queues=args.queue,
        concurrency=args.concurrency,
        poll_interval=args.poll_interval,
        shutdown_grace=args.shutdown_grace,
    )
    worker = Worker(load_app(args.app), config)
    worker.run()
    return worker.exit_code


if __name__ == "__main__":
    sys.exit(main())
