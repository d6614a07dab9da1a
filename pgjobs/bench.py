"""`pgjobs bench`: enqueue and drain no-op jobs, print rates and latency.

It works in its own schema (`pgjobs_bench`), which it drops before it starts and again when
it ends, however it ends, so it never touches real jobs and leaves nothing behind. Worker
processes are real `pgjobs worker` processes.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from typing import Any

from rich.table import Table

from pgjobs import db
from pgjobs.app import App
from pgjobs.errors import PgJobsError
from pgjobs.queries import queries_for

SCHEMA = "pgjobs_bench"
QUEUE = "bench"

app = App(schema=SCHEMA)


@app.task(name="bench.noop", queue=QUEUE)
async def noop(n: int = 0) -> None:
    """Does nothing; measures the queue itself."""


@app.task(name="bench.noop_sync", queue=QUEUE)
def noop_sync(n: int = 0) -> None:
    """Does nothing, in the thread pool."""


@dataclass
class Report:
    server: str
    workers: int
    concurrency: int
    jobs: int
    rounds: int
    enqueue_single_per_s: float = 0.0
    enqueue_bulk_per_s: float = 0.0
    drain_per_s: float = 0.0
    drain_sync_per_s: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    claim_ms: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def as_table(self) -> Table:
        table = Table(
            title=f"pgjobs bench: {self.server}, {self.workers} worker process(es) x "
            f"{self.concurrency} slots, {self.jobs} jobs, median of {self.rounds}"
        )
        table.add_column("measure")
        table.add_column("result", justify="right")
        table.add_row(
            "enqueue, one job per transaction", f"{self.enqueue_single_per_s:,.0f} jobs/s"
        )
        table.add_row(
            "enqueue_many (one jsonb[] statement)", f"{self.enqueue_bulk_per_s:,.0f} jobs/s"
        )
        table.add_row("drain, async no-op", f"{self.drain_per_s:,.0f} jobs/s")
        table.add_row("drain, sync no-op (threads)", f"{self.drain_sync_per_s:,.0f} jobs/s")
        for name, value in self.latency_ms.items():
            table.add_row(f"enqueue-to-start latency {name}", f"{value:.1f} ms")
        for name, value in self.claim_ms.items():
            table.add_row(f"claim 100 jobs, {name}", f"{value:.2f} ms")
        return table


@contextmanager
def database(dsn: str | None) -> Iterator[str]:
    """The DSN to benchmark against: the one given, else a temporary embedded server."""
    if dsn is not None or os.environ.get("PGJOBS_DSN"):
        yield db.resolve_dsn(dsn)
        return
    from pgjobs.embedded import embedded_postgres

    with embedded_postgres(temporary=True) as embedded_dsn:
        yield embedded_dsn


def run(
    dsn: str,
    *,
    jobs: int,
    workers: int,
    concurrency: int,
    latency_samples: int,
    rounds: int,
    claim_scaling: bool = False,
    progress: Callable[[str], None] | None = None,
) -> Report:
    os.environ["PGJOBS_DSN"] = dsn  # the worker processes and `app` read it
    conn = db.connect(dsn)
    try:
        _drop_schema(conn)
        return _measure(
            conn,
            Report(db.describe(dsn), workers, concurrency, jobs, rounds),
            latency_samples=latency_samples,
            claim_scaling=claim_scaling,
            say=progress or (lambda _msg: None),
        )
    finally:
        conn.close()
        app.close()
        _drop_schema_after(dsn)


def _drop_schema(conn: Any) -> None:
    with app.database.errors():
        conn.execute(queries_for(SCHEMA)["bench_drop_schema"])


def _drop_schema_after(dsn: str) -> None:
    """Drops the scratch schema on a fresh connection (the run's may be what failed); a
    failure here is reported, never raised over the run's own outcome."""
    try:
        with db.connect(dsn) as conn:
            _drop_schema(conn)
    except (PgJobsError, OSError) as exc:
        sys.stderr.write(f"bench: could not drop its schema {SCHEMA!r} ({exc}); drop it by hand\n")


def _measure(
    conn: Any,
    report: Report,
    *,
    latency_samples: int,
    claim_scaling: bool,
    say: Callable[[str], None],
) -> Report:
    q = queries_for(SCHEMA)
    app.migrate()
    procs = _start_workers(report.workers, report.concurrency)
    try:

        def started() -> bool:
            if any(proc.poll() is not None for proc in procs):
                raise PgJobsError("bench: a worker process exited at start (see its output)")
            return bool(_scalar(conn, q["count_workers"]) >= report.workers)

        _wait_for(started, 30, "workers to start")
        say(f"measuring latency over {latency_samples} jobs...")
        report.latency_ms = _latency(conn, latency_samples)
        singles, bulks, drains, sync_drains = [], [], [], []
        for number in range(1, report.rounds + 1):
            say(f"round {number}/{report.rounds}...")
            single, bulk, drain = _round(conn, report.jobs, noop)
            singles.append(single)
            bulks.append(bulk)
            drains.append(drain)
            sync_drains.append(_round(conn, report.jobs, noop_sync, single_count=0)[2])
        report.enqueue_single_per_s = statistics.median(singles)
        report.enqueue_bulk_per_s = statistics.median(bulks)
        report.drain_per_s = statistics.median(drains)
        report.drain_sync_per_s = statistics.median(sync_drains)
    finally:
        _stop_workers(procs)
    if claim_scaling:
        say("measuring claim time against table size (this enqueues 1M jobs)...")
        report.claim_ms = _claim_scaling(conn)
    return report


def _start_workers(count: int, concurrency: int) -> list[subprocess.Popen[bytes]]:
    command = [
        sys.executable, "-m", "pgjobs", "worker", "pgjobs.bench:app",
        "--queue", QUEUE, "--concurrency", str(concurrency),
    ]  # fmt: skip
    return [subprocess.Popen(command, stdout=subprocess.DEVNULL) for _ in range(count)]


def _stop_workers(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        with suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _scalar(conn: Any, query: bytes, params: dict[str, Any] | None = None) -> Any:
    row = conn.execute(query, params).fetchone()
    return row[0] if row else None


def _wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise PgJobsError(f"bench: timed out waiting for {what}")
        time.sleep(0.02)


def _latency(conn: Any, samples: int) -> dict[str, float]:
    q = queries_for(SCHEMA)
    ids = []
    for n in range(samples):
        ids.append(noop.enqueue(n))
        time.sleep(0.01)  # one job at a time: the worker is idle when each arrives
    _wait_for(lambda: _scalar(conn, q["count_unfinished"]) == 0, 60, "latency jobs")
    p50, p95, p99 = _scalar(conn, q["bench_latency"], {"ids": ids})
    return {"p50": p50, "p95": p95, "p99": p99}


def _round(conn: Any, jobs: int, task: Any, single_count: int = 2000) -> tuple[float, float, float]:
    q = queries_for(SCHEMA)
    conn.execute(q["set_queue_paused"], {"queue": QUEUE, "paused": True})
    time.sleep(1.5)  # workers re-read paused queues every second
    single_rate = 0.0
    ids: list[int] = []
    if single_count:
        started = time.perf_counter()
        ids.extend(task.enqueue(n) for n in range(single_count))
        single_rate = single_count / (time.perf_counter() - started)
    started = time.perf_counter()
    ids.extend(task.enqueue_many({"n": n} for n in range(jobs)))
    bulk_rate = jobs / (time.perf_counter() - started)
    conn.execute(q["set_queue_paused"], {"queue": QUEUE, "paused": False})
    _wait_for(lambda: _scalar(conn, q["count_unfinished"]) == 0, 600, "the drain")
    row = conn.execute(q["bench_drain"], {"ids": ids}).fetchone()
    count, seconds = row
    if count != len(ids):
        raise PgJobsError(f"bench: {len(ids) - count} job(s) did not finish")
    return single_rate, bulk_rate, count / float(seconds)


def _claim_scaling(conn: Any) -> dict[str, float]:
    """Median time of one real claim of 100 jobs (rolled back) at several table sizes."""
    q = queries_for(SCHEMA)
    results = {}
    # Only ever grows the tables (deleting would measure bloat, not size), except that the
    # synthetic history is removed for the last step.
    for label, queued, finished in (
        ("10k queued, 0 finished", 10_000, 0),
        ("10k queued, 1M finished", 10_000, 1_000_000),
        ("1M queued, 1M finished", 1_000_000, 1_000_000),
        ("1M queued, 0 finished", 1_000_000, 0),
    ):
        have = _scalar(conn, q["count_unfinished"])
        for start in range(have, queued, 100_000):
            noop.enqueue_many({"n": n} for n in range(start, min(queued, start + 100_000)))
        if not finished:
            conn.execute(q["bench_clear_history"])
        elif (missing := finished - _scalar(conn, q["count_history"])) > 0:
            conn.execute(q["bench_fill_history"], {"start": 1, "stop": missing})
        conn.execute(q["bench_vacuum"])
        timings = []
        params = {"queues": [QUEUE], "limit": 100, "worker_id": 0}
        for attempt in range(60):  # the first 10 warm caches and the prepared statement
            with conn.transaction(force_rollback=True):
                started = time.perf_counter()
                conn.execute(q["claim_jobs"], params).fetchall()
                if attempt >= 10:
                    timings.append((time.perf_counter() - started) * 1000)
        results[label] = statistics.median(timings)
    return results
