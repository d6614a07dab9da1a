"""`pgjobs demo`: an embedded Postgres, two worker processes and a stream of example jobs."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from contextlib import ExitStack, suppress
from datetime import timedelta

from rich.console import Console
from rich.live import Live
from rich.table import Table

from pgjobs import db
from pgjobs.app import App
from pgjobs.backoff import Backoff
from pgjobs.errors import Discard
from pgjobs.queries import queries_for

SCHEMA = "pgjobs_demo"
STATES = ("queued", "running", "succeeded", "dead")

app = App(schema=SCHEMA)


@app.task(name="demo.send_email", queue="email")
def send_email(to: str, subject: str) -> None:
    """Pretends to talk to an SMTP server."""
    time.sleep(random.uniform(0.02, 0.2))


@app.task(name="demo.resize_image", queue="images")
async def resize_image(image_id: int) -> None:
    await asyncio.sleep(random.uniform(0.05, 0.4))


@app.task(name="demo.flaky_webhook", queue="webhooks", max_attempts=4,
          retry=Backoff(initial=0.5, factor=2, max=5))  # fmt: skip
def flaky_webhook(url: str) -> None:
    """Fails half the time; retries with backoff."""
    if random.random() < 0.5:
        raise ConnectionError(f"{url} timed out")


@app.task(name="demo.charge_card", queue="payments", max_attempts=3,
          retry=Backoff(initial=0.5, factor=2))  # fmt: skip
def charge_card(order_id: int) -> None:
    """Order 13 is always declined: it goes dead after three attempts."""
    if order_id == 13:
        raise RuntimeError("card declined")
    if order_id % 50 == 7:
        raise Discard("order was cancelled by the customer")


def run(dsn: str | None, *, seconds: float | None, console: Console) -> None:
    with ExitStack() as stack:
        if dsn is None and not os.environ.get("PGJOBS_DSN"):
            from pgjobs.embedded import embedded_postgres

            console.print("starting the embedded Postgres (first start takes a few seconds)...")
            dsn = stack.enter_context(embedded_postgres())
        dsn = db.resolve_dsn(dsn)
        os.environ["PGJOBS_DSN"] = dsn
        stack.callback(app.close)
        app.migrate()
        console.print(f"schema {SCHEMA!r} ready on {db.describe(dsn)}; starting 2 workers")
        workers = subprocess.Popen(
            [sys.executable, "-m", "pgjobs", "worker", "pgjobs.demo:app", "--processes", "2",
             "--concurrency", "8"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        stack.callback(_stop, workers)
        _enqueue_first_batch()
        _watch(dsn, seconds, console)


def _enqueue_first_batch() -> None:
    charge_card.enqueue(13)  # the one that goes dead
    send_email.enqueue_many({"to": f"user{n}@example.com", "subject": "welcome"} for n in range(50))
    send_email.options(delay=timedelta(seconds=5)).enqueue("late@example.com", "scheduled")


def _enqueue_some(tick: int) -> None:
    send_email.enqueue(f"user{tick}@example.com", subject="hello")
    resize_image.enqueue(tick)
    if tick % 3 == 0:
        flaky_webhook.enqueue(f"https://hooks.example.com/{tick}")
    charge_card.enqueue(100 + tick)


def _watch(dsn: str, seconds: float | None, console: Console) -> None:
    deadline = time.monotonic() + seconds if seconds else None
    conn = db.connect(dsn)
    query = queries_for(SCHEMA)["state_counts"]
    tick = 0
    console.print("press Ctrl-C to stop")
    try:
        with Live(console=console, refresh_per_second=4) as live:
            while deadline is None or time.monotonic() < deadline:
                tick += 1
                _enqueue_some(tick)
                counts: dict[str, dict[str, int]] = defaultdict(dict)
                for queue, state, count in conn.execute(query, {"window": "1 hour"}):
                    counts[queue][state] = count
                live.update(_table(counts))
                time.sleep(0.25)
    except KeyboardInterrupt:
        pass
    finally:
        conn.close()


def _table(counts: dict[str, dict[str, int]]) -> Table:
    table = Table(title="pgjobs demo: jobs by queue (finished: last hour)")
    table.add_column("queue")
    for state in STATES:
        table.add_column(state, justify="right")
    for queue in sorted(counts):
        table.add_row(queue, *(str(counts[queue].get(state, 0)) for state in STATES))
    return table


def _stop(workers: subprocess.Popen[bytes]) -> None:
    with suppress(ProcessLookupError):
        workers.send_signal(signal.SIGTERM)
    try:
        workers.wait(timeout=40)
    except subprocess.TimeoutExpired:
        workers.kill()
