"""The oldest supported PostgreSQL is 14; `pgjobs migrate` and the worker refuse older ones.

No PostgreSQL older than 14 can be had on this machine, so the refusal is tested two ways:
`check_server_version` directly, and the real migrate and worker paths against the real
server made to report version 13.12. That is done with a SQL function `current_setting`
placed before pg_catalog on the search_path of the connection (`options=-c search_path=...`):
pgjobs reads the version with `SELECT current_setting('server_version_num')`, so it sees 13
there while everything else is the real server. That is a shim at the SQL level, not an old
server: it proves that every path asks the server and refuses clearly, not that pgjobs fails
in some other way on a real PostgreSQL 13.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

import pgjobs
from pgjobs import db as pgdb
from pgjobs.worker import Worker

PGJOBS = Path(sys.executable).parent / "pgjobs"
CHAOS = Path(__file__).resolve().parents[1] / "chaos"
REFUSAL = "PostgreSQL 13 is too old: pgjobs needs PostgreSQL 14 or newer"


def test_the_oldest_supported_version_is_14() -> None:
    assert pgdb.MIN_SERVER_VERSION == 140000
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "PostgreSQL 14 or newer" in readme


@pytest.mark.parametrize("version", [90624, 120022, 130012, 139999])
def test_older_versions_are_refused_with_a_clear_message(version: int) -> None:
    with pytest.raises(pgjobs.DatabaseError) as info:
        pgdb.check_server_version(version)
    major = version // 10000
    assert str(info.value) == (
        f"PostgreSQL {major} is too old: pgjobs needs PostgreSQL 14 or newer"
    )


@pytest.mark.parametrize("version", [140000, 140015, 150020, 160014, 180004, 190000])
def test_supported_versions_pass(version: int) -> None:
    pgdb.check_server_version(version)


def test_the_test_server_is_supported(db: psycopg.Connection[Any]) -> None:
    version = db.info.server_version
    print(f"test server: PostgreSQL {version}")
    pgdb.check_server_version(version)


def _pretend_13(db: psycopg.Connection[Any], dsn: str) -> str:
    """A DSN on which pgjobs' version query answers 13.12 (see the module docstring)."""
    db.execute("CREATE SCHEMA pretend")
    db.execute(
        "CREATE FUNCTION pretend.current_setting(name text) RETURNS text LANGUAGE sql AS $$"
        " SELECT CASE WHEN name = 'server_version_num' THEN '130012'"
        " ELSE pg_catalog.current_setting(name) END $$"
    )
    params = conninfo_to_dict(dsn)
    params["options"] = "-c search_path=pretend,pg_catalog,public"
    pretend = make_conninfo("", **params)
    with psycopg.connect(pretend) as conn:  # the shim works: this is what pgjobs will see
        row = conn.execute("SELECT current_setting('server_version_num')::int").fetchone()
        assert row == (130012,)
    return pretend


def _tables(db: psycopg.Connection[Any], schema: str) -> int:
    row = db.execute("SELECT count(*) FROM pg_tables WHERE schemaname = %s", (schema,)).fetchone()
    assert row is not None
    return int(row[0])


def test_migrate_refuses_a_server_older_than_14_and_creates_nothing(
    db: psycopg.Connection[Any], dsn: str
) -> None:
    pretend = _pretend_13(db, dsn)
    app = pgjobs.App(pretend, schema="fresh")
    with pytest.raises(pgjobs.DatabaseError, match=REFUSAL):
        app.migrate()
    app.close()
    row = db.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'fresh'").fetchone()
    assert row == (0,), "migrate created the schema before checking the version"

    env = dict(os.environ, PGJOBS_DSN=pretend)
    env.pop("COLUMNS", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(CHAOS), env.get("PYTHONPATH")]))
    for args in (
        ["migrate", "--schema", "fresh"],
        ["worker", "chaosapp:app"],
        ["worker", "chaosapp:app", "--processes", "2"],
    ):
        done = subprocess.run(
            [str(PGJOBS), *args],
            check=False,
            cwd=CHAOS,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        output = done.stdout + done.stderr
        assert done.returncode == 1, output
        assert output.strip() == f"error: {REFUSAL}", output
    assert _tables(db, "fresh") == 0


def test_the_worker_refuses_a_server_older_than_14(db: psycopg.Connection[Any], dsn: str) -> None:
    app = pgjobs.App(_pretend_13(db, dsn))
    with pytest.raises(pgjobs.DatabaseError, match=REFUSAL):
        asyncio.run(Worker(app).check_schema())
    app.close()
