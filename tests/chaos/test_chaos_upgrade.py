"""A rolling upgrade: a worker of the previous release still runs when `pgjobs migrate`
installs schema version 5, and a worker of this release starts next to it.

The previous release (commit 88da173, schema version 4) is taken from git into a temporary
directory and imported from there (PYTHONPATH). It migrates a fresh database to version 4
and runs a worker (chaosapp, which it can import) draining slow jobs. Then this release's
`pgjobs migrate` runs and a new worker starts. Version 5 accepts only workers of protocol 2:
the old worker's next heartbeat is refused, so it must stop claiming and exit (non-zero)
within its heartbeat interval plus its shutdown grace, finishing or handing back what it
ran. Every job succeeds, once or again for a recorded reason; nothing runs concurrently.
"""

from __future__ import annotations

import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from harness import (
    PGJOBS,
    ROOT,
    Procs,
    check,
    jobs_left,
    read_runs,
    record,
    scalar,
    wait_for,
    worker_ids,
)
from psycopg import sql
from psycopg.conninfo import make_conninfo

pytestmark = pytest.mark.chaos

OLD_COMMIT = "88da173056702892be7ae263e7c67653cb638ce9"
JOBS = 40
JOB_MS = 1500
HEARTBEAT = 5.0  # the old worker's default heartbeat interval
GRACE = 5.0  # its --shutdown-grace


@pytest.fixture
def old_code(tmp_path: Path) -> Path:
    """The previous release's pgjobs package and sql folder, extracted from git."""
    git = shutil.which("git")
    if git is None:
        pytest.skip("git is needed to extract the previous release")
    target = tmp_path / "old"
    target.mkdir()
    archive = subprocess.run(
        [git, "-C", str(ROOT), "archive", OLD_COMMIT, "pgjobs", "sql"],
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        pytest.skip(f"commit {OLD_COMMIT[:7]} is not available: {archive.stderr.decode()[:200]}")
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target


@pytest.fixture
def fresh_dsn(dsn: str) -> Iterator[str]:
    """A new, empty database (the per-test one is already at the latest version)."""
    name = f"pgjobs_upgrade_{secrets.token_hex(4)}"
    admin = make_conninfo(dsn, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_conninfo(dsn, dbname=name)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def _run(argv: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.strip()


@pytest.mark.timeout(180)
def test_an_old_worker_stops_when_migrate_installs_version_5_next_to_a_new_worker(
    procs: Procs, fresh_dsn: str, chaos_dir: Path, old_code: Path
) -> None:
    old_env = procs.env("chaos-old-migrate", fresh_dsn, {"PYTHONPATH": str(old_code)})
    where = _run([sys.executable, "-c", "import pgjobs; print(pgjobs.__file__)"], old_code, old_env)
    assert Path(where).is_relative_to(old_code), f"the old code is not what gets imported: {where}"
    _run([sys.executable, "-m", "pgjobs", "migrate", "--dsn", fresh_dsn], old_code, old_env)

    with psycopg.connect(fresh_dsn, autocommit=True) as db:
        assert scalar(db, "SELECT max(version) FROM pgjobs.migrations") == 4
        ids = [
            row[0]
            for row in db.execute(
                "INSERT INTO pgjobs.jobs (task, kwargs) SELECT 'chaos.work', jsonb_build_object("
                "'ms', %s::int) FROM generate_series(1, %s) RETURNING id",
                (JOB_MS, JOBS),
            ).fetchall()
        ]
        old = procs.start(
            [sys.executable, "-m", "pgjobs", "worker", "chaosapp:app", "--concurrency", "4",
             "--shutdown-grace", str(GRACE)],
            name="old",
            dsn=fresh_dsn,
            env={"PYTHONPATH": str(old_code)},
        )  # fmt: skip
        wait_for("the old worker to run jobs", lambda: len(read_runs(chaos_dir).starts) >= 4, 60)
        old_ids = worker_ids(db)[old.pid]

        started = time.monotonic()
        migrated = _run([str(PGJOBS), "migrate", "--dsn", fresh_dsn], ROOT, procs.env("new"))
        assert "applied migration(s) 5" in migrated, migrated
        took_migrate = time.monotonic() - started
        new = procs.worker("--concurrency", "4", name="new", dsn=fresh_dsn)
        code = old.wait(HEARTBEAT + GRACE + 10)
        old_exit = time.monotonic() - started
        assert code != 0, old.output()[-3000:]
        assert "older than this schema accepts" in old.output(), old.output()[-3000:]

        wait_for("the new worker to drain the queue", lambda: jobs_left(db) == 0, 120)
        new.signal(signal.SIGTERM)
        assert new.wait(60) == 0, new.output()[-3000:]
        runs = read_runs(chaos_dir)
        old_runs = sum(1 for starts in runs.starts.values() for s in starts if s.pid == old.pid)
        figures = check(db, ids, runs, lost_workers=old_ids)
        assert not scalar(db, "SELECT count(*) FROM pgjobs.workers")
    record(
        "old worker across the migration to version 5",
        figures,
        old_worker_runs=old_runs,
        old_worker_exit_code=code,
        migrate_s=round(took_migrate, 2),
        old_worker_gone_after_migrate_start_s=round(old_exit, 1),
    )
