"""Prometheus metrics of one worker process, in a registry of its own.

`Metrics` is middleware: as each job ends it adds to plain per-(task, queue) tallies, which
`collect()` turns into Prometheus metric families at scrape time; that keeps the cost per
job well under a microsecond. Queue depth comes from the database (`QueueDepth.update`,
refreshed by the worker) and busy slots from a callback, so neither costs anything per job.
A per-worker `CollectorRegistry` (not the global one) keeps several workers in one process,
and tests, apart.

Metrics: pgjobs_jobs_total{task,queue,outcome}, pgjobs_job_duration_seconds{task,queue}
(histogram), pgjobs_job_last_success_timestamp_seconds{task}, pgjobs_worker_busy_slots,
pgjobs_worker_slots, pgjobs_queue_depth{queue,state}, pgjobs_queue_oldest_job_age_seconds
{queue}, pgjobs_queue_paused{queue}.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString as _untyped_float_to_go_string

from pgjobs.clock import Clock, SystemClock
from pgjobs.job import Job
from pgjobs.middleware import JobOutcome, JobResult, Middleware

# Seconds; from quick jobs to hour-long ones.
DURATION_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600,
)  # fmt: skip
DEPTH_STATES = ("queued", "scheduled", "running")
OUTCOMES = (JobOutcome.SUCCEEDED, JobOutcome.RETRIED, JobOutcome.DEAD, JobOutcome.RELEASED)
_SUCCEEDED, _RETRIED, _DEAD, _RELEASED = OUTCOMES
# How prometheus-client writes the `le` label of its own histograms ("0.005", "1.0", "+Inf").
_go_float: Callable[[float], str] = _untyped_float_to_go_string


class _Tally:
    """One (task, queue): runs by outcome (in OUTCOMES order) and a duration histogram."""

    __slots__ = ("buckets", "outcomes", "seconds")

    def __init__(self, buckets: int):
        self.outcomes = [0, 0, 0, 0]
        self.buckets = [0] * (buckets + 1)  # the last one is +Inf
        self.seconds = 0.0


class Metrics(Middleware, Collector):
    """Job counters, durations and last-success times, plus the worker's gauges."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        clock: Clock | None = None,
        buckets: Sequence[float] = DURATION_BUCKETS,
    ):
        self.registry = registry if registry is not None else CollectorRegistry()
        self.clock = clock or SystemClock()
        self.bounds = sorted(float(bound) for bound in buckets)
        self._tallies: dict[tuple[str, str], _Tally] = {}
        self._succeeded_at: dict[str, float] = {}  # task -> clock.monotonic() of the success
        self._lock = threading.Lock()  # guards new keys against a concurrent scrape
        r = self.registry
        self.busy_slots = Gauge(
            "pgjobs_worker_busy_slots",
            "Job slots of this worker that are running a job.",
            [],
            registry=r,
        )
        self.slots = Gauge(
            "pgjobs_worker_slots", "Job slots of this worker (its concurrency).", [], registry=r
        )
        self.queue_depth = QueueDepth()
        r.register(self.queue_depth)
        r.register(self)

    def track_slots(self, busy: Callable[[], float], total: int) -> None:
        """Report `busy()` (read at scrape time) out of `total` slots."""
        self.busy_slots.set_function(busy)
        self.slots.set(total)

    def after_job(self, job: Job, result: JobResult) -> None:
        tally = self._tallies.get((job.task, job.queue))
        if tally is None:
            tally = self._new_tally(job)
        outcome = result.outcome
        if outcome is _SUCCEEDED:
            tally.outcomes[0] += 1
            if job.task in self._succeeded_at:
                self._succeeded_at[job.task] = self.clock.monotonic()
            else:
                with self._lock:
                    self._succeeded_at[job.task] = self.clock.monotonic()
        elif outcome is _RETRIED:
            tally.outcomes[1] += 1
        elif outcome is _DEAD:
            tally.outcomes[2] += 1
        else:
            tally.outcomes[3] += 1
            return  # released: cut short, its run time says nothing about the task
        tally.buckets[bisect_left(self.bounds, result.duration)] += 1
        tally.seconds += result.duration

    def _new_tally(self, job: Job) -> _Tally:
        with self._lock:
            tally = self._tallies[(job.task, job.queue)] = _Tally(len(self.bounds))
        return tally

    def collect(self) -> Iterator[Metric]:
        """The job metrics as of now (called by the registry at scrape time)."""
        with self._lock:
            tallies = list(self._tallies.items())
            succeeded_at = list(self._succeeded_at.items())
        jobs = CounterMetricFamily(
            "pgjobs_jobs",
            "Jobs run by this worker, by how the run ended (succeeded, retried, dead, released).",
            labels=["task", "queue", "outcome"],
        )
        durations = HistogramMetricFamily(
            "pgjobs_job_duration_seconds",
            "Run time of jobs in seconds (released runs are not timed).",
            labels=["task", "queue"],
        )
        bounds = [_go_float(bound) for bound in self.bounds] + ["+Inf"]
        for (task, queue), tally in tallies:
            for outcome, count in zip(OUTCOMES, list(tally.outcomes), strict=True):
                jobs.add_metric([task, queue, outcome.value], count)
            cumulative, running = [], 0
            for bound, count in zip(bounds, list(tally.buckets), strict=True):
                running += count
                cumulative.append((bound, running))
            durations.add_metric([task, queue], cumulative, tally.seconds)
        last = GaugeMetricFamily(
            "pgjobs_job_last_success_timestamp_seconds",
            "Unix time of the last successful run of each task on this worker.",
            labels=["task"],
        )
        wall, mono = self.clock.now().timestamp(), self.clock.monotonic()
        for task, at in succeeded_at:
            last.add_metric([task], wall - (mono - at))
        yield jobs
        yield durations
        yield last


@dataclass(frozen=True)
class QueueDepthRow:
    queue: str
    paused: bool
    queued: int
    scheduled: int
    running: int
    oldest_queued_age: timedelta | None


class QueueDepth(Collector):
    """Jobs per queue and state as last read from the database (empty until then)."""

    def __init__(self) -> None:
        self._rows: tuple[QueueDepthRow, ...] = ()
        self._lock = threading.Lock()

    def update(self, rows: Iterable[QueueDepthRow]) -> None:
        snapshot = tuple(rows)
        with self._lock:
            self._rows = snapshot

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            rows = self._rows
        depth = GaugeMetricFamily(
            "pgjobs_queue_depth",
            "Jobs per queue and state (queued = eligible now, scheduled = queued for later).",
            labels=["queue", "state"],
        )
        age = GaugeMetricFamily(
            "pgjobs_queue_oldest_job_age_seconds",
            "How long the oldest eligible job of each queue has waited (0 when none).",
            labels=["queue"],
        )
        paused = GaugeMetricFamily(
            "pgjobs_queue_paused", "1 if the queue is paused, else 0.", labels=["queue"]
        )
        for row in rows:
            for state in DEPTH_STATES:
                depth.add_metric([row.queue, state], getattr(row, state))
            wait = row.oldest_queued_age
            age.add_metric([row.queue], max(wait.total_seconds(), 0.0) if wait else 0.0)
            paused.add_metric([row.queue], 1.0 if row.paused else 0.0)
        yield depth
        yield age
        yield paused
