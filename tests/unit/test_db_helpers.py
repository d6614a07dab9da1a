"""pgjobs.db helpers that need no server: DSNs, redaction, lock keys, error translation."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict

from pgjobs import ConfigError, DatabaseError, SchemaError, db

SECRET = "s3cr3t-Pa55"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PGJOBS_DSN", "PGHOST", "PGPORT", "PGDATABASE", "PGAPPNAME"):
        monkeypatch.delenv(name, raising=False)


# --- redact ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            f"postgresql://alice:{SECRET}@db.example:5432/app",
            "postgresql://alice:***@db.example:5432/app",
        ),
        (f"postgres://:{SECRET}@host/db", "postgres://:***@host/db"),
        (f"host=h password={SECRET} dbname=d", "host=h password=*** dbname=d"),
        (f"host=h PASSWORD = {SECRET} user=u", "host=h PASSWORD = *** user=u"),
        (f"host=h password='{SECRET} with spaces' dbname=d", "host=h password=*** dbname=d"),
        (f"password='it\\'s {SECRET}' host=h", "password=*** host=h"),
    ],
)
def test_redact_removes_passwords(text: str, expected: str) -> None:
    redacted = db.redact(text)
    assert redacted == expected
    assert SECRET not in redacted


def test_redact_inside_a_message() -> None:
    message = f'connection to "postgresql://bob:{SECRET}@h/d" failed; tried password={SECRET}'
    redacted = db.redact(message)
    assert SECRET not in redacted
    assert "bob" in redacted
    assert redacted.count("***") == 2


def test_redact_url_query_parameter_password() -> None:
    assert SECRET not in db.redact(f"postgresql://h/d?sslmode=require&password={SECRET}")


@pytest.mark.parametrize(
    "text",
    ["postgresql://alice@db.example/app", "host=h port=5432 dbname=d user=u", "no dsn at all"],
)
def test_redact_leaves_password_free_text_alone(text: str) -> None:
    assert db.redact(text) == text


# --- describe -------------------------------------------------------------------------------


def test_describe_key_value_dsn() -> None:
    text = db.describe(f"host=db.example port=6543 dbname=app user=u password={SECRET}")
    assert text == "db.example:6543/app"


def test_describe_url_dsn() -> None:
    text = db.describe(f"postgresql://u:{SECRET}@db.example:5433/orders")
    assert text == "db.example:5433/orders"


def test_describe_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert db.describe("") == "localhost:5432/(default)"
    monkeypatch.setenv("PGHOST", "envhost")
    monkeypatch.setenv("PGPORT", "7777")
    monkeypatch.setenv("PGDATABASE", "envdb")
    assert db.describe(f"password={SECRET}") == "envhost:7777/envdb"


def test_describe_invalid_dsn_never_echoes_it() -> None:
    text = db.describe(f"host=h password={SECRET} garbage")
    assert text == "<invalid DSN>"


# --- resolve_dsn ----------------------------------------------------------------------------


def test_resolve_dsn_prefers_the_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGJOBS_DSN", "host=from-env dbname=env")
    assert db.resolve_dsn("host=from-arg dbname=arg") == "host=from-arg dbname=arg"


def test_resolve_dsn_falls_back_to_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGJOBS_DSN", "postgresql://u@from-env/env")
    assert db.resolve_dsn(None) == "postgresql://u@from-env/env"


def test_resolve_dsn_empty_means_libpq_environment() -> None:
    assert db.resolve_dsn(None) == ""


@pytest.mark.parametrize(
    "dsn",
    [
        f"host=h password={SECRET} dbname",
        f"host=h password='{SECRET}",
        f"postgresql://u:{SECRET}@h/d?bogus=1",
        f"postgresql://u:{SECRET}@[::1/d",
    ],
)
def test_resolve_dsn_malformed_raises_without_password(dsn: str) -> None:
    with pytest.raises(ConfigError, match="invalid DSN") as info:
        db.resolve_dsn(dsn)
    assert SECRET not in str(info.value)
    assert info.value.__cause__ is None  # the psycopg error (which may echo it) is dropped
    assert info.value.__suppress_context__


def test_resolve_dsn_malformed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGJOBS_DSN", f"user=u password={SECRET} nonsense")
    with pytest.raises(ConfigError, match="invalid DSN") as info:
        db.resolve_dsn(None)
    assert SECRET not in str(info.value)


def test_database_resolves_dsn_on_use(monkeypatch: pytest.MonkeyPatch) -> None:
    database = db.Database(None, "pgjobs")
    monkeypatch.setenv("PGJOBS_DSN", "host=late dbname=x")
    assert database.dsn == "host=late dbname=x"


# --- conninfo -------------------------------------------------------------------------------


def test_conninfo_adds_defaults() -> None:
    params = conninfo_to_dict(db.conninfo("host=db dbname=x"))
    assert params["application_name"] == "pgjobs"
    assert params["connect_timeout"] == str(db.CONNECT_TIMEOUT)
    assert "keepalives" not in params


def test_conninfo_keeps_what_the_user_set(monkeypatch: pytest.MonkeyPatch) -> None:
    params = conninfo_to_dict(
        db.conninfo(
            "host=db dbname=x application_name=mine connect_timeout=3 keepalives_idle=60",
            keepalives=True,
        )
    )
    assert params["application_name"] == "mine"
    assert params["connect_timeout"] == "3"
    assert params["keepalives_idle"] == "60"
    assert params["keepalives"] == "1"
    monkeypatch.setenv("PGAPPNAME", "from-env")
    assert "application_name" not in conninfo_to_dict(db.conninfo("host=db"))


def test_conninfo_keepalives_only_over_tcp() -> None:
    assert "keepalives" in conninfo_to_dict(db.conninfo("host=db", keepalives=True))
    assert "keepalives" not in conninfo_to_dict(db.conninfo("host=/run/pg", keepalives=True))


# --- lock namespaces and channels ------------------------------------------------------------


def test_lock_namespace_is_stable() -> None:
    # Workers of different versions must agree on these keys: pin the values.
    assert db.lock_namespace("pgjobs", "migrate") == db.lock_namespace("pgjobs", "migrate")
    assert db.lock_namespace("pgjobs", "migrate") == 1523371430
    assert db.lock_namespace("pgjobs", "worker") == 1999473942


@pytest.mark.parametrize("schema", ["pgjobs", "other", "x" * 50])
@pytest.mark.parametrize("purpose", ["migrate", "cron", "worker", ""])
def test_lock_namespace_is_31_bit(schema: str, purpose: str) -> None:
    key = db.lock_namespace(schema, purpose)
    assert isinstance(key, int)
    assert 0 <= key < 2**31


def test_lock_namespace_differs_by_schema_and_purpose() -> None:
    keys = {db.lock_namespace(s, p) for s in ("a", "b") for p in ("migrate", "cron", "worker")}
    assert len(keys) == 6


def test_notify_channel() -> None:
    assert db.notify_channel("pgjobs") == "pgjobs.jobs"


# --- errors ---------------------------------------------------------------------------------


def test_check_server_version() -> None:
    db.check_server_version(db.MIN_SERVER_VERSION)
    db.check_server_version(170002)
    with pytest.raises(DatabaseError, match=r"PostgreSQL 13 is too old.*14 or newer"):
        db.check_server_version(130011)


@pytest.mark.parametrize(
    "error",
    [pg_errors.UndefinedTable, pg_errors.InvalidSchemaName, pg_errors.UndefinedFunction],
)
def test_translate_missing_schema(error: type[psycopg.Error]) -> None:
    result = db.translate(error('relation "jobs" does not exist\nLINE 1: ...'), "", "myschema")
    assert isinstance(result, SchemaError)
    assert "'myschema'" in str(result)
    assert "pgjobs migrate" in str(result)
    assert "LINE 1" not in str(result)  # first line only


def test_translate_operational_error_redacts() -> None:
    exc = psycopg.OperationalError(f"connection failed: password={SECRET} rejected")
    result = db.translate(exc, f"postgresql://u:{SECRET}@db.example:5433/app")
    assert isinstance(result, DatabaseError)
    assert "cannot talk to Postgres at db.example:5433/app" in str(result)
    assert SECRET not in str(result)


def test_translate_other_errors() -> None:
    result = db.translate(pg_errors.UniqueViolation("duplicate key"), "")
    assert type(result) is DatabaseError
    assert "Postgres refused the operation: duplicate key" in str(result)


def test_errors_translated_chains_the_cause() -> None:
    original = psycopg.OperationalError("server closed the connection")
    with (
        pytest.raises(DatabaseError, match="server closed the connection") as info,
        db.errors_translated("host=h"),
    ):
        raise original
    assert info.value.__cause__ is original


def test_errors_translated_leaves_other_errors_alone() -> None:
    with pytest.raises(KeyError), db.errors_translated(""):
        raise KeyError("x")
