"""pgjobs.metrics: job counters, durations and gauges, read back through the text format."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pgjobs import FrozenClock, Job, JobOutcome, JobResult
from pgjobs.metrics import DURATION_BUCKETS, Metrics, QueueDepthRow

START = datetime(2026, 4, 1, 12, 0, tzinfo=UTC)


def make_job(task: str = "emails.send", queue: str = "email", job_id: int = 1) -> Job:
    return Job(job_id, task, queue, [], {}, 0, 1, None, START, START, START, None, 7)


def samples(registry: CollectorRegistry) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the registry's text exposition, keyed by name and labels."""
    text = generate_latest(registry).decode()
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return (name, frozenset(labels.items()))


def test_jobs_are_counted_by_task_queue_and_outcome() -> None:
    metrics = Metrics(clock=FrozenClock(START))
    job = make_job()
    for outcome in (JobOutcome.SUCCEEDED, JobOutcome.SUCCEEDED, JobOutcome.RETRIED):
        metrics.after_job(job, JobResult(outcome, 0.2))
    metrics.after_job(make_job("reports.build", "reports"), JobResult(JobOutcome.DEAD, 1.0))

    found = samples(metrics.registry)
    total = "pgjobs_jobs_total"
    assert found[key(total, task="emails.send", queue="email", outcome="succeeded")] == 2
    assert found[key(total, task="emails.send", queue="email", outcome="retried")] == 1
    assert found[key(total, task="reports.build", queue="reports", outcome="dead")] == 1
    # Every outcome of a seen task and queue exists, at 0 until it happens: rate() and
    # increase() then see the first failure.
    assert found[key(total, task="emails.send", queue="email", outcome="dead")] == 0
    assert found[key(total, task="emails.send", queue="email", outcome="released")] == 0
    assert key(total, task="reports.build", queue="email", outcome="dead") not in found


def test_durations_fill_the_histogram_and_released_runs_are_not_timed() -> None:
    metrics = Metrics(clock=FrozenClock(START))
    job = make_job()
    metrics.after_job(job, JobResult(JobOutcome.SUCCEEDED, 0.003))
    metrics.after_job(job, JobResult(JobOutcome.RETRIED, 0.3))
    metrics.after_job(job, JobResult(JobOutcome.RELEASED, 99.0))

    found = samples(metrics.registry)
    labels = {"task": "emails.send", "queue": "email"}
    assert found[key("pgjobs_job_duration_seconds_count", **labels)] == 2
    assert abs(found[key("pgjobs_job_duration_seconds_sum", **labels)] - 0.303) < 1e-9
    assert found[key("pgjobs_job_duration_seconds_bucket", le="0.005", **labels)] == 1
    assert found[key("pgjobs_job_duration_seconds_bucket", le="0.5", **labels)] == 2
    assert found[key("pgjobs_job_duration_seconds_bucket", le="+Inf", **labels)] == 2
    assert DURATION_BUCKETS[-1] == 3600  # hour-long jobs still land in a finite bucket
    released = key("pgjobs_jobs_total", outcome="released", **labels)
    assert found[released] == 1


def test_last_success_is_the_clock_time_of_the_latest_success_per_task() -> None:
    clock = FrozenClock(START)
    metrics = Metrics(clock=clock)
    metrics.after_job(make_job(), JobResult(JobOutcome.SUCCEEDED, 0.1))
    clock.advance(timedelta(minutes=5))
    metrics.after_job(make_job(), JobResult(JobOutcome.SUCCEEDED, 0.1))
    clock.advance(timedelta(minutes=5))
    metrics.after_job(make_job(), JobResult(JobOutcome.DEAD, 0.1))  # not a success

    found = samples(metrics.registry)
    expected = (START + timedelta(minutes=5)).timestamp()
    assert found[key("pgjobs_job_last_success_timestamp_seconds", task="emails.send")] == expected


def test_slots_are_read_when_scraped() -> None:
    metrics = Metrics()
    busy = [3]
    metrics.track_slots(lambda: busy[0], 10)
    assert samples(metrics.registry)[key("pgjobs_worker_busy_slots")] == 3
    busy[0] = 7
    found = samples(metrics.registry)
    assert found[key("pgjobs_worker_busy_slots")] == 7
    assert found[key("pgjobs_worker_slots")] == 10


def test_queue_depth_reports_the_last_snapshot_per_queue_and_state() -> None:
    metrics = Metrics()
    assert key("pgjobs_queue_depth", queue="email", state="queued") not in samples(metrics.registry)
    metrics.queue_depth.update(
        [
            QueueDepthRow("email", False, 12, 3, 2, timedelta(seconds=42.5)),
            QueueDepthRow("reports", True, 0, 0, 0, None),
        ]
    )
    found = samples(metrics.registry)
    assert found[key("pgjobs_queue_depth", queue="email", state="queued")] == 12
    assert found[key("pgjobs_queue_depth", queue="email", state="scheduled")] == 3
    assert found[key("pgjobs_queue_depth", queue="email", state="running")] == 2
    assert found[key("pgjobs_queue_depth", queue="reports", state="queued")] == 0
    assert found[key("pgjobs_queue_oldest_job_age_seconds", queue="email")] == 42.5
    assert found[key("pgjobs_queue_oldest_job_age_seconds", queue="reports")] == 0
    assert found[key("pgjobs_queue_paused", queue="reports")] == 1
    assert found[key("pgjobs_queue_paused", queue="email")] == 0

    metrics.queue_depth.update([QueueDepthRow("email", False, 1, 0, 0, None)])
    found = samples(metrics.registry)
    assert found[key("pgjobs_queue_depth", queue="email", state="queued")] == 1
    assert key("pgjobs_queue_depth", queue="reports", state="queued") not in found


def test_each_worker_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()  # would raise on a shared registry: same names
    first.after_job(make_job(), JobResult(JobOutcome.SUCCEEDED, 0.1))
    labels = {"task": "emails.send", "queue": "email", "outcome": "succeeded"}
    assert samples(first.registry)[key("pgjobs_jobs_total", **labels)] == 1
    assert key("pgjobs_jobs_total", **labels) not in samples(second.registry)
