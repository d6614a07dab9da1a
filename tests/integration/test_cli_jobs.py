"""`pgjobs jobs ls|show|retry|cancel|purge` through typer's CliRunner, against real Postgres."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from cli_runner import error_line, pgjobs, pgjobs_json

import pgjobs as pgj

Conn = psycopg.Connection[Any]


@pytest.fixture
def jobs(app: pgj.App) -> dict[str, int]:
    """One succeeded, one dead (two attempts, with tracebacks), one queued, one scheduled."""

    @app.task(name="cli.ok", queue="fast")
    def ok() -> None:
        pass

    @app.task(name="cli.fails", queue="slow", max_attempts=2, retry=pgj.Backoff(initial=0))
    def fails(order_id: int) -> None:
        raise RuntimeError(f"card declined for order {order_id}")

    ids = {"succeeded": ok.enqueue(), "dead": fails.enqueue(13)}
    app.run_worker(burst=True, install_signal_handlers=False)
    ids["queued"] = app.enqueue("cli.later", kwargs={"x": [1, 2]}, queue="slow")
    ids["scheduled"] = app.enqueue("cli.later", queue="slow", delay=timedelta(hours=2))
    return ids


def test_ls_lists_every_state_newest_first(dsn: str, jobs: dict[str, int]) -> None:
    listed = pgjobs_json("jobs", "ls", dsn=dsn)
    assert [job["id"] for job in listed] == sorted(jobs.values(), reverse=True)
    by_id = {job["id"]: job for job in listed}
    dead = by_id[jobs["dead"]]
    assert (dead["state"], dead["attempt"], dead["max_attempts"]) == ("dead", 2, 2)
    assert dead["last_error"] == "RuntimeError: card declined for order 13"
    assert by_id[jobs["queued"]]["finished_at"] is None

    table = pgjobs("jobs", "ls", dsn=dsn).stdout
    assert "RuntimeError: card declined for order 13" in table
    for job_id in jobs.values():
        assert str(job_id) in table


def test_ls_filters_by_state_queue_task_and_limit(dsn: str, jobs: dict[str, int]) -> None:
    def ids(*options: str) -> list[int]:
        return [job["id"] for job in pgjobs_json("jobs", "ls", *options, dsn=dsn)]

    assert ids("--state", "dead") == [jobs["dead"]]
    assert ids("--state", "queued") == [jobs["scheduled"], jobs["queued"]]
    assert ids("--queue", "fast") == [jobs["succeeded"]]
    assert ids("--task", "cli.later", "--limit", "1") == [jobs["scheduled"]]
    assert ids("--state", "running") == []
    empty = pgjobs("jobs", "ls", "--state", "running", dsn=dsn)
    assert "no jobs match" in empty.stderr
    bad = pgjobs("jobs", "ls", "--state", "lost", dsn=dsn, expect=2)
    assert "lost" in bad.stderr


def test_show_prints_arguments_attempts_and_tracebacks(dsn: str, jobs: dict[str, int]) -> None:
    text = pgjobs("jobs", "show", str(jobs["dead"]), dsn=dsn, shows_tracebacks=True).stdout
    assert "cli.fails" in text
    assert "[13]" in text  # args
    assert "attempt 1" in text
    assert "attempt 2" in text
    assert text.count("RuntimeError: card declined for order 13") >= 2
    assert text.count("Traceback (most recent call last)") == 2
    data = pgjobs_json("jobs", "show", str(jobs["dead"]), dsn=dsn)
    assert data["args"] == [13]
    assert [e["attempt"] for e in data["errors"]] == [1, 2]
    assert all("in fails" in e["traceback"] for e in data["errors"])


def test_show_of_an_unknown_id_is_one_clear_error(dsn: str) -> None:
    result = pgjobs("jobs", "show", "424242", dsn=dsn, expect=1)
    assert error_line(result) == "error: no job with id 424242"


def test_retry_a_dead_job_queues_it_again(dsn: str, jobs: dict[str, int], db: Conn) -> None:
    result = pgjobs("jobs", "retry", str(jobs["dead"]), dsn=dsn)
    assert f"job {jobs['dead']} queued again" in result.stdout
    row = db.execute("SELECT state, attempt FROM pgjobs.jobs WHERE id = %s", (jobs["dead"],))
    assert row.fetchone() == ("queued", 0)


def test_retry_refuses_a_queued_job_and_reports_each_id(dsn: str, jobs: dict[str, int]) -> None:
    result = pgjobs("jobs", "retry", str(jobs["queued"]), "999999", dsn=dsn, expect=1)
    errors = result.stderr.strip().splitlines()
    assert errors == [
        f"error: job {jobs['queued']} is queued: only dead or cancelled jobs can be retried",
        "error: no job with id 999999",
    ]


def test_retry_all_dead_reports_counts_and_dedup_conflicts(app: pgj.App, dsn: str) -> None:
    @app.task(name="cli.dies", max_attempts=1)
    def dies() -> None:
        raise ValueError("no")

    plain = [dies.enqueue() for _ in range(3)]
    keyed = dies.options(dedup_key="only-one", queue="other").enqueue()
    app.run_worker(burst=True, install_signal_handlers=False)
    holder = app.enqueue("cli.holder", dedup_key="only-one", queue="held")
    app.admin.pause_queue("held")

    result = pgjobs("jobs", "retry", "--all-dead", dsn=dsn)
    assert "3 dead job(s) queued again" in result.stdout
    assert f"skipped job {keyed}: unfinished job {holder} holds its dedup_key" in result.stderr
    report = pgjobs_json("jobs", "retry", "--all-dead", "--queue", "other", dsn=dsn)
    assert report == {"retried": [], "skipped": [{"id": keyed, "holder": holder}]}
    assert {j["id"] for j in pgjobs_json("jobs", "ls", "--state", "queued", dsn=dsn)} >= set(plain)


def test_retry_needs_ids_or_all_dead(dsn: str) -> None:
    assert error_line(pgjobs("jobs", "retry", dsn=dsn, expect=1)) == (
        "error: give job ids or --all-dead (not both)"
    )
    result = pgjobs("jobs", "retry", "1", "--all-dead", dsn=dsn, expect=1)
    assert "not both" in error_line(result)
    result = pgjobs("jobs", "retry", "1", "--queue", "q", dsn=dsn, expect=1)
    assert error_line(result) == "error: --queue goes with --all-dead"


def test_cancel_a_queued_job_and_refuse_a_running_one(
    dsn: str, jobs: dict[str, int], db: Conn
) -> None:
    result = pgjobs("jobs", "cancel", str(jobs["queued"]), dsn=dsn)
    assert f"job {jobs['queued']} cancelled" in result.stdout
    [job] = pgjobs_json("jobs", "ls", "--state", "cancelled", dsn=dsn)
    assert job["id"] == jobs["queued"]

    db.execute(
        "UPDATE pgjobs.jobs SET state = 'running', worker_id = 1 WHERE id = %s",
        (jobs["scheduled"],),
    )
    refused = pgjobs("jobs", "cancel", str(jobs["scheduled"]), dsn=dsn, expect=1)
    assert error_line(refused).startswith(
        f"error: job {jobs['scheduled']} is running: only queued jobs can be cancelled"
    )


def test_purge_deletes_old_history_with_progress_and_dry_run(
    dsn: str, jobs: dict[str, int], db: Conn
) -> None:
    db.execute(
        "UPDATE pgjobs.job_history SET finished_at = now() - interval '40 days' WHERE id = %s",
        (jobs["dead"],),
    )
    dry = pgjobs("jobs", "purge", "--older-than", "30d", "--dry-run", dsn=dsn)
    assert "would delete 1 finished job(s) older than 30d00h" in dry.stdout
    assert db.execute("SELECT count(*) FROM pgjobs.job_history").fetchone() == (2,)

    data = pgjobs_json("jobs", "purge", "--older-than", "30d", "--state", "succeeded", dsn=dsn)
    assert data == {"deleted": 0, "matching": 0}
    result = pgjobs("jobs", "purge", "--older-than", "30d", "--batch-size", "1", dsn=dsn)
    assert "deleted 1 finished job(s)" in result.stdout
    left = [row[0] for row in db.execute("SELECT id FROM pgjobs.job_history")]
    assert left == [jobs["succeeded"]]


@pytest.mark.parametrize("duration", ["7", "seven days", "1.5d", "0d"])
def test_purge_with_a_bad_duration_is_one_clear_error(dsn: str, duration: str) -> None:
    result = pgjobs("jobs", "purge", "--older-than", duration, dsn=dsn, expect=1)
    assert error_line(result).startswith(f"error: invalid duration {duration!r}")


def test_purge_refuses_unfinished_states(dsn: str) -> None:
    result = pgjobs("jobs", "purge", "--older-than", "1d", "--state", "queued", dsn=dsn, expect=1)
    assert "only finished jobs can be purged" in error_line(result)


def test_json_output_is_plain_json(dsn: str, jobs: dict[str, int]) -> None:
    raw = pgjobs("jobs", "ls", "--json", dsn=dsn).stdout
    assert "\x1b[" not in raw  # no colour codes
    assert isinstance(json.loads(raw), list)
