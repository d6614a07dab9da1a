"""No part of a password in any message, whatever the DSN looks like (pgjobs.dsn, pgjobs.db).

Every DSN below hides a password made of distinctive pieces (Zq9, Xk7, Wm3): no message may
show any of them, even when an unescaped '@' or '/' makes libpq read a piece as the host, the
port or the database. The same table runs end to end through the CLI in
tests/integration/test_cli_dsn_redaction.py.
"""

from __future__ import annotations

import psycopg
import pytest
from nasty_dsns import DSNS, IDS, PIECES
from psycopg.conninfo import conninfo_to_dict

from pgjobs import ConfigError, DatabaseError, db, dsn


def clean(text: str) -> bool:
    return not any(piece in text for piece in PIECES)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PGJOBS_DSN", "PGHOST", "PGPORT", "PGDATABASE", "PGPASSWORD"):
        monkeypatch.delenv(name, raising=False)


def _readable(value: str) -> dict[str, str] | None:
    try:
        return {k: str(v) for k, v in conninfo_to_dict(value).items()}
    except psycopg.ProgrammingError:
        return None


@pytest.mark.parametrize("value", DSNS, ids=IDS)
def test_resolving_a_nasty_dsn_never_shows_the_password(value: str) -> None:
    if dsn.check(value) is None:
        assert db.resolve_dsn(value) == value
        return
    with pytest.raises(ConfigError) as info:
        db.resolve_dsn(value)
    assert str(info.value).startswith("invalid DSN (<dsn hidden>)"), info.value
    assert clean(str(info.value)), info.value
    assert info.value.__cause__ is None


@pytest.mark.parametrize("value", DSNS, ids=IDS)
def test_describing_a_nasty_dsn_never_shows_the_password(value: str) -> None:
    assert clean(db.describe(value)), db.describe(value)


@pytest.mark.parametrize("value", DSNS, ids=IDS)
def test_libpq_errors_quoting_what_it_parsed_never_show_the_password(value: str) -> None:
    """libpq's messages quote the host, port and database it read: with an unescaped '@'
    or '/', those are pieces of the password."""
    params = _readable(value) or {}
    host, port, dbname = params.get("host", "h"), params.get("port", "5432"), params.get("dbname")
    messages = [
        f'connection to server at "{host}" (10.0.0.1), port {port} failed: timeout',
        f'could not translate host name "{host}" to address: Name or service not known',
        f"failed to resolve host '{host}': [Errno -2] Name or service not known",
        f'invalid integer value "{port}" for connection option "port"',
        f'FATAL:  database "{dbname}" does not exist',
        f"connection to {value} failed",
    ]
    for message in messages:
        error = db.translate(psycopg.OperationalError(message), value)
        assert isinstance(error, DatabaseError)
        assert clean(str(error)), error


@pytest.mark.parametrize("value", DSNS, ids=IDS)
def test_a_refused_or_unreadable_dsn_is_never_connected_to(value: str) -> None:
    """An ambiguous URL is refused before libpq could send a piece of the password to a
    "host" made of another piece."""
    params = _readable(value)
    refused = dsn.check(value) is not None
    if params is not None and not refused:
        for key in ("host", "port", "dbname", "user"):
            assert clean(params.get(key, "")), (key, params)


@pytest.mark.parametrize(
    "value",
    [
        "postgresql://app:Zq9@Xk7/Wm3@db.example:5432/app",
        "postgresql://app:Zq9@Xk7@db.example/app",
        "postgresql://app:Zq9%40Xk7@db.example/app",
        "postgresql://app@db.example/app?sslmode=require&password=Zq9Xk7",
        "host=db password='Zq9 Xk7' dbname=app",
        "host=db password=Zq9@Xk7 dbname=app",
    ],
)
def test_redact_without_the_dsn_hides_whole_passwords_in_log_text(value: str) -> None:
    assert clean(db.redact(f"worker started on {value} (pid 42)"))


def test_ordinary_dsns_are_described_and_accepted_as_before() -> None:
    assert db.resolve_dsn("postgresql://u:pw@db.example:5433/orders?application_name=a@b")
    assert db.describe("postgresql://u:Zq9@db.example:5433/orders") == "db.example:5433/orders"
    assert db.describe("postgresql://u:p%40ss@h1:5432,h2:5433/d") == "h1,h2:5432,5433/d"
    assert db.describe("host=db dbname=app password=Zq9Xk7") == "db:5432/app"


def test_pgpassword_never_shows_either(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPASSWORD", "Zq9Xk7Wm3")
    error = db.translate(psycopg.OperationalError('role "Zq9Xk7Wm3" failed'), "host=h")
    assert clean(str(error)), error


def test_an_unreadable_dsn_keeps_libpqs_punctuation_but_no_piece() -> None:
    with pytest.raises(ConfigError) as info:
        db.resolve_dsn("host=h password=Zq9 Xk7")
    assert str(info.value) == (
        'invalid DSN (<dsn hidden>): missing "=" after "***" in connection info string'
    )
