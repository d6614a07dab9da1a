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

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

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
