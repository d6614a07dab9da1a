"""The chaos suite: faults injected into real worker processes against real Postgres.

Every test here is marked `chaos` and left out of the default run (pyproject's addopts say
`-m "not chaos"`). Run it with

    .venv/bin/python -m pytest -m chaos tests/chaos                      # embedded PostgreSQL 18
    PGJOBS_TEST_DSN=postgresql://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python -m pytest -m chaos tests/chaos                  # the machine's server

Scenarios that must restart Postgres start a private server of the same major version
(see private_server.py); everything else uses the per-test database of tests/conftest.py.
The figures of each scenario are printed at the end of the run.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import harness  # noqa: E402


@pytest.fixture
def chaos_dir(tmp_path: Path) -> Path:
    """Where chaosapp's handlers write their run logs and hold their probe locks."""
    path = tmp_path / "runs"
    path.mkdir()
    return path


@pytest.fixture
def procs(dsn: str, tmp_path: Path, chaos_dir: Path) -> Iterator[harness.Procs]:
    manager = harness.Procs(dsn, tmp_path, chaos_dir)
    try:
        yield manager
    finally:
        manager.cleanup()


@pytest.fixture
def logins(dsn: str, db: psycopg.Connection[Any]) -> Iterator[harness.Logins]:
    """Login roles in fresh producer and worker roles made by sql/roles.sql."""
    psql = shutil.which("psql")
    if psql is None:
        pytest.skip("psql is needed to apply sql/roles.sql")
    suffix = f"{os.getpid()}_{secrets.token_hex(3)}"
    groups = (f"chaos_producer_{suffix}", f"chaos_worker_{suffix}")
    made = harness.Logins(f"chaos_app_{suffix}", f"chaos_jobs_{suffix}")
    try:
        role_vars = ["-v", f"producer_role={groups[0]}", "-v", f"worker_role={groups[1]}"]
        done = subprocess.run(
            [psql, dsn, "-X", "-q", "-f", str(harness.ROOT / "sql" / "roles.sql"), *role_vars],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        for login, group in zip((made.producer, made.worker), groups, strict=True):
            db.execute(
                sql.SQL("CREATE ROLE {} LOGIN IN ROLE {}").format(
                    sql.Identifier(login), sql.Identifier(group)
                )
            )
        yield made
    finally:
        names = [made.producer, made.worker, *groups]
        query = "SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)"
        existing = [row[0] for row in db.execute(query, (names,)).fetchall()]
        if existing:
            db.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = ANY(%s)",
                (existing,),
            )
            idents = sql.SQL(", ").join(map(sql.Identifier, existing))
            db.execute(sql.SQL("DROP OWNED BY {}").format(idents))
            db.execute(sql.SQL("DROP ROLE {}").format(idents))


@pytest.fixture(scope="session")
def server_major(pg_server: Any) -> int:
    """The major version of the server the suite runs against."""
    params = {
        "host": pg_server.host,
        "port": pg_server.port,
        "user": pg_server.user,
        "dbname": "postgres",
    }
    if getattr(pg_server, "password", None):
        params["password"] = pg_server.password
    with psycopg.connect(**params) as conn:
        return int(conn.info.server_version) // 10000


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not harness.FIGURES:
        return
    terminalreporter.section("chaos figures")
    for name, data in harness.FIGURES:
        terminalreporter.write_line(f"{name}: " + ", ".join(f"{k}={v}" for k, v in data.items()))
