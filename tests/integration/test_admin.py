"""pgjobs.admin against a real Postgres: listing, inspecting, retrying, cancelling and
purging jobs, pausing queues, workers and statistics. Plus its pure helpers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

import pgjobs
from pgjobs import (
    DedupKeyConflict,
    FrozenClock,
    JobNotFound,
    JobState,
    JobStateError,
    QueueNotFound,
    SchemaError,
)
from pgjobs.admin_models import format_duration, parse_duration

Conn = psycopg.Connection[Any]


def run_burst(app: pgjobs.App, queues: list[str] | None = None) -> None:
    app.run_worker(queues=queues, burst=True, install_signal_handlers=False)


def state_of(db: Conn, job_id: int) -> str | None:
    row = db.execute(
        "SELECT state::text FROM pgjobs.jobs WHERE id = %(id)s"
        " UNION ALL SELECT state::text FROM pgjobs.job_history WHERE id = %(id)s",
        {"id": job_id},
    ).fetchone()
    return row[0] if row else None


def make_dead(app: pgjobs.App, *, queue: str = "default", dedup_key: str | None = None) -> int:
    """A job that dies on its only attempt."""

    if "admin.dies" not in app.tasks:

        @app.task(name="admin.dies", max_attempts=1)
        def dies(n: int = 0) -> None:
            raise ValueError(f"broken input {n}")

    return app.enqueue("admin.dies", queue=queue, dedup_key=dedup_key, max_attempts=1)


# ------------------------------------------------------------------------ pure helpers
@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("30m", 1800),
        ("12h", 43200),
        ("7d", 7 * 86400),
        ("2w", 14 * 86400),
        ("1d12h", 36 * 3600),
        (" 1H 30M ", 5400),
    ],
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    "text", ["", "7", "7x", "days", "1.5h", "-3d", "0m", "7d!", "9" * 30 + "w"]
)
def test_parse_duration_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_format_duration() -> None:
    assert format_duration(None) == "-"
    assert format_duration(0.0123) == "12ms"
    assert format_duration(3.25) == "3.2s"
    assert format_duration(timedelta(seconds=42)) == "42s"
    assert format_duration(timedelta(minutes=3, seconds=5)) == "3m05s"
    assert format_duration(timedelta(hours=2, minutes=10)) == "2h10m"
    assert format_duration(timedelta(days=3, hours=4)) == "3d04h"
    assert format_duration(-5.0) == "0ms"


# ------------------------------------------------------------------------ list, show
def test_list_jobs_spans_both_tables_newest_first_with_filters(app: pgjobs.App) -> None:
    @app.task(name="admin.ok", queue="fast")
    def ok() -> None:
        pass

    done = [ok.enqueue() for _ in range(2)]
    run_burst(app)
    dead = make_dead(app, queue="slow")
    run_burst(app)
    waiting = app.enqueue("admin.later", queue="slow", delay=timedelta(hours=1))

    admin = app.admin
    listed = admin.list_jobs()
    assert [job.id for job in listed] == [waiting, dead, *reversed(done)]
    assert [job.state for job in listed] == [
        JobState.QUEUED,
        JobState.DEAD,
        JobState.SUCCEEDED,
        JobState.SUCCEEDED,
    ]
    assert listed[1].last_error == "ValueError: broken input 0"
    assert listed[0].finished_at is None
    assert listed[1].finished_at is not None

    assert [j.id for j in admin.list_jobs(state="dead")] == [dead]
    assert [j.id for j in admin.list_jobs(state=JobState.QUEUED)] == [waiting]
    assert [j.id for j in admin.list_jobs(queue="slow")] == [waiting, dead]
    assert [j.id for j in admin.list_jobs(task="admin.ok", limit=1)] == [done[1]]
    assert admin.list_jobs(state="running") == []
    with pytest.raises(ValueError, match="'lost' is not a valid JobState"):
        admin.list_jobs(state="lost")
    with pytest.raises(ValueError, match="limit must be >= 1"):
        admin.list_jobs(limit=0)


def test_get_job_has_arguments_and_every_error_with_its_traceback(app: pgjobs.App) -> None:
    calls = []

    @app.task(name="admin.flaky", max_attempts=2, retry=pgjobs.Backoff(initial=0, jitter=0))
    def flaky(order: int, *, note: str) -> None:
        calls.append(order)
        raise RuntimeError(f"attempt {len(calls)} failed")

    job_id = flaky.enqueue(7, note="ü")
    run_burst(app)
    job = app.admin.get_job(job_id)
    assert (job.task, job.state, job.attempt, job.max_attempts) == ("admin.flaky", "dead", 2, 2)
    assert (job.args, job.kwargs) == ([7], {"note": "ü"})
    assert job.finished_at is not None
    assert job.started_at is not None
    assert [(e.attempt, e.kind, e.error) for e in job.errors] == [
        (1, "exception", "RuntimeError: attempt 1 failed"),
        (2, "exception", "RuntimeError: attempt 2 failed"),
    ]
    for error in job.errors:
        assert error.traceback is not None
        assert "in flaky" in error.traceback
        assert error.at is not None
        assert error.at.tzinfo is not None
        assert error.worker_id == job.worker_id

    with pytest.raises(JobNotFound, match="no job with id 999999"):
        app.admin.get_job(999999)


# ----------------------------------------------------------------------------- retry
def test_retry_moves_a_dead_job_back_with_its_attempts_reset(app: pgjobs.App, db: Conn) -> None:
    job_id = make_dead(app)
    run_burst(app)
    before = app.admin.get_job(job_id)

    app.admin.retry_job(job_id)
    row = db.execute(
        "SELECT state::text, attempt, worker_id, started_at, run_at <= now(), enqueued_at"
        " FROM pgjobs.jobs WHERE id = %s",
        (job_id,),
    ).fetchone()
    assert row == ("queued", 0, None, None, True, before.enqueued_at)
    assert db.execute("SELECT count(*) FROM pgjobs.job_history").fetchone() == (0,)
    retried = app.admin.get_job(job_id)
    assert [e.kind for e in retried.errors] == ["exception", "retried"]
    assert retried.errors[-1].error == "retried by an operator after it was dead"

    # It runs again, from attempt 1.
    run_burst(app)
    again = app.admin.get_job(job_id)
    assert (again.state, again.attempt) == (JobState.DEAD, 1)
    assert [e.kind for e in again.errors] == ["exception", "retried", "exception"]


def test_retry_refuses_jobs_that_are_not_dead_or_cancelled(app: pgjobs.App) -> None:
    queued = app.enqueue("admin.nothing")
    with pytest.raises(JobStateError, match=f"job {queued} is queued: only dead or cancelled"):
        app.admin.retry_job(queued)
    with pytest.raises(JobNotFound):
        app.admin.retry_job(424242)


def test_retry_reports_a_dedup_key_held_by_an_unfinished_job(app: pgjobs.App, db: Conn) -> None:
    dead = make_dead(app, dedup_key="welcome:42")
    run_burst(app)
    holder = app.enqueue("admin.other", dedup_key="welcome:42")

    with pytest.raises(DedupKeyConflict, match=f"unfinished job {holder} holds its dedup_key"):
        app.admin.retry_job(dead)
    assert state_of(db, dead) == "dead"  # nothing moved
    assert state_of(db, holder) == "queued"


def test_retry_all_dead_works_in_batches_per_queue_and_skips_held_keys(
    app: pgjobs.App, db: Conn
) -> None:
    in_a = [make_dead(app, queue="a") for _ in range(5)]
    in_b = make_dead(app, queue="b")
    keyed = make_dead(app, queue="a", dedup_key="k")
    run_burst(app)
    holder = app.enqueue("admin.other", queue="hold", dedup_key="k")
    app.admin.pause_queue("hold")
    progress: list[tuple[int, int]] = []

    report = app.admin.retry_dead(queue="a", batch_size=2, progress=lambda *p: progress.append(p))
    assert report.retried == in_a
    assert [(s.id, s.holder) for s in report.skipped] == [(keyed, holder)]
    assert progress[-1] == (6, 6)
    assert len(progress) == 3  # 6 jobs, 2 per batch
    assert [state_of(db, j) for j in in_a] == ["queued"] * 5
    assert state_of(db, in_b) == "dead"
    assert state_of(db, keyed) == "dead"

    report = app.admin.retry_dead()  # every queue: b now, the keyed one still blocked
    assert report.retried == [in_b]
    assert [s.id for s in report.skipped] == [keyed]


def test_two_dead_jobs_with_one_dedup_key_retry_only_the_newest(app: pgjobs.App, db: Conn) -> None:
    older = make_dead(app, dedup_key="same")
    run_burst(app)
    newer = make_dead(app, dedup_key="same")
    run_burst(app)

    report = app.admin.retry_dead()
    assert report.retried == [newer]
    assert [(s.id, s.holder) for s in report.skipped] == [(older, newer)]
    assert state_of(db, older) == "dead"


def test_a_cancelled_job_can_be_retried(app: pgjobs.App, db: Conn) -> None:
    job_id = app.enqueue("admin.x", delay=timedelta(hours=1))
    app.admin.cancel_job(job_id)
    app.admin.retry_job(job_id)
    assert state_of(db, job_id) == "queued"
    assert app.admin.get_job(job_id).errors[-1].error.endswith("after it was cancelled")


# ---------------------------------------------------------------------------- cancel
def test_cancel_moves_a_queued_job_to_history(app: pgjobs.App, db: Conn) -> None:
    job_id = app.enqueue("admin.x", kwargs={"a": 1})
    app.admin.cancel_job(job_id)
    job = app.admin.get_job(job_id)
    assert job.state == JobState.CANCELLED
    assert job.finished_at is not None
    assert job.kwargs == {"a": 1}
    assert db.execute("SELECT count(*) FROM pgjobs.jobs").fetchone() == (0,)
    with pytest.raises(JobStateError, match="is already cancelled"):
        app.admin.cancel_job(job_id)
    with pytest.raises(JobNotFound):
        app.admin.cancel_job(777777)


def test_cancel_refuses_a_running_job(app: pgjobs.App, db: Conn) -> None:
    job_id = app.enqueue("admin.x")
    db.execute("UPDATE pgjobs.jobs SET state = 'running', worker_id = 1 WHERE id = %s", (job_id,))
    with pytest.raises(JobStateError, match=f"job {job_id} is running: only queued jobs"):
        app.admin.cancel_job(job_id)
    assert state_of(db, job_id) == "running"


# ----------------------------------------------------------------------------- purge
def _age_history(db: Conn, job_id: int, days: int) -> None:
    db.execute(
        "UPDATE pgjobs.job_history SET finished_at = now() - make_interval(days => %s)"
        " WHERE id = %s",
        (days, job_id),
    )


def test_purge_deletes_old_finished_jobs_in_batches(dsn: str, db: Conn) -> None:
    app = pgjobs.App(dsn, clock=FrozenClock(datetime.now(UTC)))
    try:
        dead = make_dead(app)
        run_burst(app)  # before the ageing below: the worker's pruner would take those
        ids = [app.enqueue("admin.x") for _ in range(7)]
        for job_id in ids:
            app.admin.cancel_job(job_id)
        for job_id in [*ids[:5], dead]:
            _age_history(db, job_id, 10)

        assert app.admin.count_purgeable(timedelta(days=7)) == 6
        assert app.admin.count_purgeable(timedelta(days=7), ["dead"]) == 1
        progress: list[tuple[int, int]] = []
        deleted = app.admin.purge(
            timedelta(days=7), ["cancelled"], batch_size=2, progress=lambda *p: progress.append(p)
        )
        assert deleted == 5
        assert progress == [(2, 5), (4, 5), (5, 5)]
        left = {row[0] for row in db.execute("SELECT id FROM pgjobs.job_history")}
        assert left == {*ids[5:], dead}

        # The cut-off comes from the app's clock.
        app.clock.advance(timedelta(days=30))  # type: ignore[attr-defined]
        assert app.admin.purge(timedelta(days=7)) == 3
        assert db.execute("SELECT count(*) FROM pgjobs.job_history").fetchone() == (0,)
    finally:
        app.close()


class _AheadClock(pgjobs.SystemClock):
    """An operator's host whose wall clock runs 31 days ahead (a production clock:
    `db_now()` is None)."""

    def now(self) -> datetime:
        return super().now() + timedelta(days=31)


def test_purge_ages_jobs_on_the_database_clock_not_the_operators(dsn: str, db: Conn) -> None:
    app = pgjobs.App(dsn, clock=_AheadClock())
    try:
        ids = [app.enqueue("admin.x") for _ in range(2)]
        for job_id in ids:
            app.admin.cancel_job(job_id)
        _age_history(db, ids[0], 10)
        assert app.admin.count_purgeable(timedelta(days=7)) == 1
        assert app.admin.purge(timedelta(days=7)) == 1
        left = [row[0] for row in db.execute("SELECT id FROM pgjobs.job_history")]
        assert left == [ids[1]]
    finally:
        app.close()


def test_purge_refuses_unfinished_states_and_empty_spans(app: pgjobs.App) -> None:
    with pytest.raises(ValueError, match="only finished jobs"):
        app.admin.purge(timedelta(days=1), ["queued"])
    with pytest.raises(ValueError, match="positive"):
        app.admin.purge(timedelta(0))


# ---------------------------------------------------------------------------- queues
def test_a_paused_queue_is_not_claimed_until_resumed(app: pgjobs.App, db: Conn) -> None:
    ran: list[str] = []

    @app.task(name="admin.track")
    def track(queue: str) -> None:
        ran.append(queue)

    paused_job = track.options(queue="reports").enqueue("reports")
    track.options(queue="email").enqueue("email")
    app.admin.pause_queue("reports")

    run_burst(app)  # exits once nothing claimable is left
    assert ran == ["email"]
    assert state_of(db, paused_job) == "queued"
    assert {q.queue: q.paused for q in app.admin.list_queues()} == {
        "email": False,
        "reports": True,
    }

    app.admin.resume_queue("reports")
    run_burst(app)
    assert ran == ["email", "reports"]
    assert state_of(db, paused_job) == "succeeded"


def test_pausing_an_unknown_queue_fails_unless_created(app: pgjobs.App) -> None:
    app.enqueue("admin.x", queue="known")
    with pytest.raises(QueueNotFound, match=r"no queue named 'typo' \(known: known\)"):
        app.admin.pause_queue("typo")
    with pytest.raises(QueueNotFound):
        app.admin.resume_queue("typo")
    app.admin.pause_queue("future", create=True)
    queues = {q.queue: q for q in app.admin.list_queues()}
    assert queues["future"].paused
    assert queues["known"].queued == 1


# ------------------------------------------------------------------- workers, stats
def test_workers_running_jobs_and_stats(app: pgjobs.App, db: Conn) -> None:
    make_dead(app)
    run_burst(app)  # first: its rescuer would take the hand-made worker below for lost
    db.execute(
        "INSERT INTO pgjobs.workers (id, host, pid, queues, concurrency, protocol)"
        " VALUES (5, 'box', 99, '{email}', 4, 2)"
    )
    job_id = app.enqueue("admin.x", queue="email")
    db.execute(
        "UPDATE pgjobs.jobs SET state = 'running', worker_id = 5, attempt = 1,"
        " started_at = now() - interval '1 minute' WHERE id = %s",
        (job_id,),
    )

    [worker] = app.admin.list_workers()
    assert (worker.id, worker.host, worker.pid, worker.queues) == (5, "box", 99, ["email"])
    assert (worker.running, worker.concurrency) == (1, 4)
    [running] = app.admin.running_jobs()
    assert (running.id, running.worker_id, running.host, running.pid) == (job_id, 5, "box", 99)
    assert running.runtime is not None
    assert running.runtime >= timedelta(minutes=1)

    stats = app.admin.stats(timedelta(minutes=10))
    assert stats.period == timedelta(minutes=10)
    assert {q.queue: (q.running, q.dead_1h) for q in stats.queues} == {
        "default": (0, 1),
        "email": (1, 0),
    }
    [dies] = stats.tasks
    assert (dies.task, dies.dead, dies.failure_rate) == ("admin.dies", 1, 1.0)
    assert [w.id for w in stats.workers] == [5]
    assert [r.id for r in stats.running] == [job_id]
    with pytest.raises(ValueError, match="positive"):
        app.admin.task_stats(timedelta(0))


def test_an_unmigrated_schema_is_a_schema_error(dsn: str) -> None:
    app = pgjobs.App(dsn, schema="never_migrated")
    try:
        with pytest.raises(SchemaError, match="run `pgjobs migrate`"):
            app.admin.list_jobs()
        with pytest.raises(SchemaError):
            app.admin.stats()
    finally:
        app.close()
