"""Operating pgjobs from Python: list, inspect, retry, cancel and purge jobs; pause and
resume queues; list workers; read statistics. The `pgjobs` CLI is a thin shell over this.

    admin = app.admin                      # or pgjobs.Admin(app)
    admin.list_jobs(state="dead", queue="email", limit=20)
    admin.retry_job(42)
    admin.pause_queue("reports")

Every method is synchronous, runs on the app's connection pool and raises pgjobs errors:
`JobNotFound`, `JobStateError`, `DedupKeyConflict`, `QueueNotFound`, or `SchemaError` /
`DatabaseError` from the database boundary.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import tuple_row

from pgjobs.admin_models import (
    JobDetail,
    JobSummary,
    QueueStats,
    RetryReport,
    RetrySkip,
    RunningJob,
    Stats,
    TaskStats,
    WorkerStatus,
    detail_from_row,
    summary_from_row,
)
from pgjobs.errors import JobNotFound, PgJobsError
from pgjobs.job import check_name
from pgjobs.states import JobState

if TYPE_CHECKING:
    from pgjobs.app import App

Progress = Callable[[int, int], None]  # (done so far, total)

DEFAULT_PERIOD = timedelta(minutes=5)
RETRY_BATCH = 500
PURGE_BATCH = 10_000
FINISHED = (JobState.SUCCEEDED, JobState.DEAD, JobState.CANCELLED)


class JobStateError(PgJobsError):
    """The job is not in a state that allows the operation (e.g. cancelling a running job)."""


class DedupKeyConflict(PgJobsError):
    """A retry would give a second unfinished job the same dedup_key."""


class QueueNotFound(PgJobsError):
    """No queue has that name."""


class Admin:
    """Operations on one app's jobs, queues and workers."""

    def __init__(self, app: App):
        self.app = app
        self.database = app.database
        self.q = app.database.queries
        self.clock = app.clock

    @contextmanager
    def _cursor(self) -> Iterator[psycopg.Cursor[Any]]:
        database = self.database
        with (
            database.errors(),
            database.pool().connection() as conn,
            conn.cursor(row_factory=tuple_row) as cur,
        ):
            yield cur

    def _rows(self, query: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        with self._cursor() as cur:
            return cur.execute(self.q[query], params).fetchall()

    def _scalar(self, query: str, params: dict[str, Any] | None = None) -> Any:
        rows = self._rows(query, params)
        return rows[0][0] if rows else None

    # ------------------------------------------------------------------------ jobs
    def list_jobs(
        self,
        *,
        state: JobState | str | None = None,
        queue: str | None = None,
        task: str | None = None,
        limit: int = 50,
    ) -> list[JobSummary]:
        """Jobs, newest first, from both the hot table and history."""
        wanted = JobState(state) if state is not None else None
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        params = {
            "state": wanted.value if wanted else None,
            "queue": queue,
            "task": task,
            "limit": limit,
        }
        rows = []
        if wanted is None or not wanted.finished:
            rows += self._rows("admin_list_active_jobs", params)
        if wanted is JobState.DEAD:
            rows += self._rows("admin_list_dead_jobs", params)
        elif wanted is None or wanted.finished:
            rows += self._rows("admin_list_finished_jobs", params)
        rows.sort(key=lambda row: row[0], reverse=True)
        return [summary_from_row(row) for row in rows[:limit]]

    def get_job(self, job_id: int) -> JobDetail:
        """Everything about one job; raises JobNotFound."""
        rows = self._rows("get_job", {"id": job_id})
        if not rows:
            raise JobNotFound(f"no job with id {job_id}")
        return detail_from_row(rows[0])

    def retry_job(self, job_id: int) -> None:
        """Queue a dead or cancelled job again, its attempt count reset."""
        report = self._retry([job_id])
        if report.retried:
            return
        if report.skipped:
            holder = report.skipped[0].holder
            raise DedupKeyConflict(
                f"job {job_id} was not retried: unfinished job {holder} holds its dedup_key"
            )
        state = self._state(job_id)
        raise JobStateError(f"job {job_id} is {state}: only dead or cancelled jobs can be retried")

    def retry_dead(
        self,
        *,
        queue: str | None = None,
        batch_size: int = RETRY_BATCH,
        progress: Progress | None = None,
    ) -> RetryReport:
        """Queue every dead job (of `queue`, or all) again, `batch_size` per transaction."""
        total = int(self._scalar("admin_count_dead", {"queue": queue}))
        retried: list[int] = []
        skipped: list[RetrySkip] = []
        after = 0
        while True:
            params = {"after": after, "queue": queue, "limit": batch_size}
            ids = [row[0] for row in self._rows("admin_dead_job_ids", params)]
            if not ids:
                break
            report = self._retry(ids)
            retried += report.retried
            skipped += report.skipped
            after = ids[-1]
            if progress is not None:
                progress(len(retried) + len(skipped), max(total, len(retried) + len(skipped)))
        return RetryReport(retried, skipped)

    def _retry(self, ids: list[int]) -> RetryReport:
        try:
            rows = self._rows("admin_retry_jobs", {"ids": ids})
        except PgJobsError as exc:
            cause = exc.__cause__
            if (
                isinstance(cause, pg_errors.UniqueViolation)
                and cause.diag.constraint_name == "jobs_dedup_key_idx"
            ):
                raise DedupKeyConflict(
                    "a job was enqueued with the same dedup_key while retrying: try again"
                ) from exc
            raise
        retried = sorted(row[0] for row in rows if row[1] is None)
        skipped = sorted((RetrySkip(row[0], row[1]) for row in rows if row[1] is not None),
                         key=lambda skip: skip.id)  # fmt: skip
        return RetryReport(retried, skipped)

    def cancel_job(self, job_id: int) -> None:
        """Cancel a queued job (it moves to history as cancelled). A running job cannot be
        cancelled: it finishes, fails or times out on its own."""
        if self._rows("admin_cancel_job", {"id": job_id}):
            return
        state = self._state(job_id)
        if state == JobState.RUNNING:
            raise JobStateError(
                f"job {job_id} is running: only queued jobs can be cancelled (a running job "
                "finishes, fails or times out on its own)"
            )
        raise JobStateError(f"job {job_id} is already {state}: only queued jobs can be cancelled")

    def _state(self, job_id: int) -> JobState:
        state = self._scalar("admin_job_state", {"id": job_id})
        if state is None:
            raise JobNotFound(f"no job with id {job_id}")
        return JobState(state)

    def count_purgeable(
        self, older_than: timedelta, states: Iterable[JobState | str] | None = None
    ) -> int:
        """How many finished jobs `purge` would delete."""
        params = self._purge_params(older_than, states)
        return int(self._scalar("admin_count_purgeable", params))

    def purge(
        self,
        older_than: timedelta,
        states: Iterable[JobState | str] | None = None,
        *,
        batch_size: int = PURGE_BATCH,
        progress: Progress | None = None,
    ) -> int:
        """Delete finished jobs (of `states`, default all) that finished more than
        `older_than` ago, `batch_size` per transaction; returns how many."""
        params = self._purge_params(older_than, states)
        total = int(self._scalar("admin_count_purgeable", params)) if progress else 0
        params["limit"] = batch_size
        deleted = 0
        while True:
            with self._cursor() as cur:
                count = cur.execute(self.q["prune_history"], params).rowcount
            deleted += count
            if progress is not None:
                progress(deleted, max(total, deleted))
            if count < batch_size:
                return deleted

    def _purge_params(
        self, older_than: timedelta, states: Iterable[JobState | str] | None
    ) -> dict[str, Any]:
        if older_than <= timedelta(0):
            raise ValueError("older_than must be a positive duration")
        chosen = [JobState(state) for state in states] if states is not None else list(FINISHED)
        unfinished = [state.value for state in chosen if not state.finished]
        if unfinished or not chosen:
            raise ValueError(
                f"only finished jobs can be purged (succeeded, dead, cancelled), got {unfinished}"
            )
        return {
            # Age on the database's clock (None in production), as the workers' pruner.
            "now": self.clock.db_now(),
            "retention": older_than,
            "states": [state.value for state in chosen],
        }

    # ---------------------------------------------------------------------- queues
    def list_queues(self) -> list[QueueStats]:
        """Every queue with its job counts (the `queue_stats` view)."""
        return [QueueStats(*row) for row in self._rows("admin_queue_stats")]

    def pause_queue(self, name: str, *, create: bool = False) -> None:
        """Stop workers claiming from `name` (within about a second; running jobs finish).
        With `create`, a queue no job was ever enqueued to is created paused."""
        self._set_paused(name, True, create=create)

    def resume_queue(self, name: str) -> None:
        """Let workers claim from `name` again."""
        self._set_paused(name, False, create=False)

    def _set_paused(self, name: str, paused: bool, *, create: bool) -> None:
        check_name("queue", name)
        if create:
            self._rows_no_result("set_queue_paused", {"queue": name, "paused": paused})
            return
        if self._rows("admin_pause_queue", {"queue": name, "paused": paused}):
            return
        known = [row[0] for row in self._rows("admin_queue_names")]
        listed = ", ".join(known[:20]) + (", ..." if len(known) > 20 else "")
        raise QueueNotFound(
            f"no queue named {name!r} (known: {listed or 'none'}); a queue exists once a job "
            "is enqueued to it"
        )

    def _rows_no_result(self, query: str, params: dict[str, Any]) -> None:
        with self._cursor() as cur:
            cur.execute(self.q[query], params)

    # -------------------------------------------------------------- workers, stats
    def list_workers(self) -> list[WorkerStatus]:
        """Live worker processes with their last heartbeat (the `worker_status` view)."""
        return [WorkerStatus(*row) for row in self._rows("admin_workers")]

    def running_jobs(self, limit: int = 10) -> list[RunningJob]:
        """The longest-running jobs first (the `running_jobs` view)."""
        return [RunningJob(*row) for row in self._rows("admin_running_jobs", {"limit": limit})]

    def task_stats(self, period: timedelta = DEFAULT_PERIOD) -> list[TaskStats]:
        """Per task counts, throughput, failure rate and run-time percentiles of the jobs
        that finished within `period` (cost grows with the jobs finished in it)."""
        if period <= timedelta(0):
            raise ValueError("period must be a positive duration")
        return [TaskStats(*row) for row in self._rows("admin_task_stats", {"span": period})]

    def stats(self, period: timedelta = DEFAULT_PERIOD, running: int = 5) -> Stats:
        """Queues, tasks over `period`, workers and the longest-running jobs, at once."""
        return Stats(
            taken_at=self.clock.now(),
            period=period,
            queues=self.list_queues(),
            tasks=self.task_stats(period),
            workers=self.list_workers(),
            running=self.running_jobs(running),
        )
