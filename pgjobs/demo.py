"""`pgjobs demo`: an embedded Postgres, two worker processes and a stream of example jobs.

Works in its own schema (`pgjobs_demo`), dropped and recreated at every start. Without a DSN
it starts the embedded server (data under ~/.cache/pgjobs) and stops it on exit.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, nullcontext, suppress
from datetime import timedelta
from typing import Any

import psycopg
from rich.console import Console
from rich.live import Live
from rich.table import Table

from pgjobs import db
from pgjobs.app import App
from pgjobs.backoff import Backoff
from pgjobs.errors import Discard, PgJobsError
from pgjobs.queries import queries_for

SCHEMA = "pgjobs_demo"
WORKER_PROCESSES = 2
COLUMNS = ("queued", "scheduled", "running", "retrying", "succeeded", "dead", "failed attempts")
STARTUP_LIMIT = 60.0  # seconds the workers get to register

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
    """Order 13 is always declined: it goes dead after three attempts. Orders ending in 7
    were cancelled: the job discards itself (dead at once, no retry)."""
    if order_id == 13:
        raise RuntimeError("card declined")
    if order_id % 10 == 7:
        raise Discard("order was cancelled by the customer")


@app.every(timedelta(seconds=5), name="demo.sweep", queue="maintenance")
def sweep() -> None:
    """A schedule: every 5 seconds the cron leader (one of the two workers) enqueues a run."""
    time.sleep(0.05)


def run(dsn: str | None, *, seconds: float | None, console: Console) -> None:
    """Run the demo until Ctrl-C, or for `seconds` once the workers are up."""
    with ExitStack() as stack:
        if dsn is None and not os.environ.get("PGJOBS_DSN"):
            from pgjobs.embedded import default_data_dir, embedded_postgres

            console.print(f"starting the embedded Postgres in {default_data_dir()}...")
            dsn = stack.enter_context(embedded_postgres())
        dsn = db.resolve_dsn(dsn)
        os.environ["PGJOBS_DSN"] = dsn  # the worker processes and the App read it there
        stack.callback(app.close)
        conn = stack.enter_context(db.connect(dsn))
        with app.database.errors():
            conn.execute(queries_for(SCHEMA)["demo_reset"])
        app.migrate()
        log_path = os.path.join(tempfile.gettempdir(), f"pgjobs-demo-{os.getpid()}.log")
        console.print(f"schema {SCHEMA!r} ready on {db.describe(dsn)}")
        console.print(f"starting {WORKER_PROCESSES} worker processes (log: {log_path})")
        log = stack.enter_context(open(log_path, "wb"))
        workers = _start_workers(log)
        stopper = stack.enter_context(ExitStack())
        stopper.callback(_stop, workers)
        _wait_for_workers(conn, workers, log_path)
        _watch(conn, seconds, console, _enqueue_first_batch())
        stopper.close()  # workers finish their running jobs before the last count
        console.print(_table(_counts(conn), "pgjobs demo: final counts"))
        console.print(f"worker log: {log_path}")


def _start_workers(log: Any) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "pgjobs", "worker", "pgjobs.demo:app",
               "--processes", str(WORKER_PROCESSES), "--concurrency", "8"]  # fmt: skip
    # Its own session: a terminal's Ctrl-C reaches only the demo, which stops the workers
    # once. Should the demo die without that, the workers get SIGTERM from the kernel.
    return subprocess.Popen(
        command,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=_die_with_parent,  # noqa: PLW1509 - only prctl, no Python state
    )


def _die_with_parent() -> None:
    with suppress(OSError, AttributeError):  # Linux only
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def _wait_for_workers(
    conn: psycopg.Connection[Any], workers: subprocess.Popen[bytes], log_path: str
) -> None:
    query = queries_for(SCHEMA)["count_workers"]
    deadline = time.monotonic() + STARTUP_LIMIT
    while True:
        with app.database.errors():
            row = conn.execute(query).fetchone()
        if row and row[0] >= WORKER_PROCESSES:
            return
        if workers.poll() is not None:
            raise PgJobsError(f"the workers exited with code {workers.returncode}; see {log_path}")
        if time.monotonic() > deadline:
            raise PgJobsError(f"the workers did not start in {STARTUP_LIMIT:g}s; see {log_path}")
        time.sleep(0.1)


def _enqueue_first_batch() -> int:
    charge_card.enqueue(13)  # declined three times: goes dead
    charge_card.enqueue(7)  # cancelled: discarded, dead at once
    welcome = ({"to": f"user{n}@example.com", "subject": "welcome"} for n in range(50))
    ids = send_email.enqueue_many(welcome)
    send_email.options(delay=timedelta(seconds=5)).enqueue("late@example.com", "scheduled")
    return len(ids) + 3


def _enqueue_some(tick: int) -> int:
    send_email.enqueue(f"user{tick}@example.com", subject="hello")
    resize_image.enqueue(tick)
    charge_card.enqueue(100 + tick)
    if tick % 3 == 0:
        flaky_webhook.enqueue(f"https://hooks.example.com/{tick}")
        return 4
    return 3


def _watch(
    conn: psycopg.Connection[Any], seconds: float | None, console: Console, enqueued: int
) -> None:
    start = time.monotonic()
    deadline = start + seconds if seconds else None
    tick = 0
    until = "press Ctrl-C to stop" if deadline is None else f"stopping in {seconds:g}s"
    console.print(f"jobs are flowing; {until}")
    live = Live(console=console, refresh_per_second=4, transient=True)
    try:
        with live if console.is_terminal else nullcontext():
            while deadline is None or time.monotonic() < deadline:
                tick += 1
                enqueued += _enqueue_some(tick)
                caption = f"{enqueued} jobs enqueued in {time.monotonic() - start:.0f}s"
                live.update(_table(_counts(conn), "pgjobs demo (finished: last hour)", caption))
                time.sleep(0.25)
    except KeyboardInterrupt:
        console.print("stopping the workers (they finish their running jobs first)...")


def _counts(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    with app.database.errors():
        return conn.execute(queries_for(SCHEMA)["demo_dashboard"], {"window": "1 hour"}).fetchall()


def _table(rows: list[tuple[Any, ...]], title: str, caption: str | None = None) -> Table:
    table = Table(title=title, caption=caption)
    table.add_column("queue")
    for column in COLUMNS:
        table.add_column(column, justify="right")
    totals = [0] * len(COLUMNS)
    for queue, *counts in rows:
        table.add_row(queue, *map(str, counts))
        totals = [a + b for a, b in zip(totals, counts, strict=True)]
    table.add_section()
    table.add_row("total", *map(str, totals))
    return table


def _stop(workers: subprocess.Popen[bytes]) -> None:
    with suppress(ProcessLookupError):
        workers.send_signal(signal.SIGTERM)
    try:
        workers.wait(timeout=40)
    except subprocess.TimeoutExpired:
        workers.kill()
        workers.wait()
