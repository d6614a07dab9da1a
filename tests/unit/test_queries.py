"""pgjobs.queries: named queries, schema names, migrations, and the job_state enum mirror."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pgjobs import ConfigError, JobState
from pgjobs.queries import (
    Queries,
    check_schema_name,
    migrations,
    queries_for,
    sql_root,
)

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "pgjobs"
SQL_DIR = REPO / "sql"
INITIAL = SQL_DIR / "migrations" / "0001_initial.sql"

# Queries the package cannot work without (enqueue, worker loop, maintenance, migrations).
CORE_QUERIES = {
    "enqueue",
    "enqueue_many",
    "claim_jobs",
    "complete_jobs",
    "retry_jobs",
    "bury_jobs",
    "release_jobs",
    "rescue_jobs",
    "prune_history",
    "heartbeat",
    "create_migrations_table",
    "applied_migrations",
    "record_migration",
}


def test_queries_sql_is_the_checkout_copy_or_the_packaged_one() -> None:
    root = sql_root()
    assert (root / "queries.sql").is_file()
    assert (root / "queries.sql").read_text(encoding="utf-8") == (
        SQL_DIR / "queries.sql"
    ).read_text(encoding="utf-8")


def test_core_queries_exist() -> None:
    assert set(Queries("pgjobs").names()) >= CORE_QUERIES


@pytest.mark.parametrize("schema", ["pgjobs", "Jobs_2", "_x"])
def test_every_query_renders_for_a_schema(schema: str) -> None:
    queries = Queries(schema)
    quoted = f'"{schema}".'.encode()
    names = queries.names()
    assert names == sorted(names)
    for name in names:
        text = queries[name]
        assert isinstance(text, bytes)
        assert text.strip(), name
        assert b"{schema}" not in text, name
        assert b"-- name:" not in text, name
    # Every query that touches a pgjobs object names it through the quoted schema.
    for name in CORE_QUERIES:
        assert quoted in queries[name], name


def test_schema_identifier_is_quoted() -> None:
    text = Queries("MixedCase")["applied_migrations"]
    assert b'"MixedCase".migrations' in text


def test_unknown_query_name() -> None:
    with pytest.raises(KeyError):
        Queries("pgjobs")["no_such_query"]


def test_sequence_name_is_quoted_and_qualified() -> None:
    assert Queries("pgjobs").sequence("job_id_seq") == '"pgjobs"."job_id_seq"'
    assert Queries("My_S").sequence("x") == '"My_S"."x"'


def test_queries_for_is_cached_per_schema() -> None:
    assert queries_for("pgjobs") is queries_for("pgjobs")
    assert queries_for("pgjobs") is not queries_for("other")
    assert queries_for("other").schema == "other"


def test_every_query_the_package_uses_is_defined() -> None:
    pattern = re.compile(r"""\b(?:q|queries)\[\s*["'](\w+)["']\s*\]""")
    used: dict[str, str] = {}
    for path in PACKAGE.rglob("*.py"):
        for name in pattern.findall(path.read_text(encoding="utf-8")):
            used.setdefault(name, str(path.relative_to(REPO)))
    assert "enqueue" in used  # the scan itself works
    defined = set(Queries("pgjobs").names())
    missing = {name: where for name, where in used.items() if name not in defined}
    assert not missing, f"queries used but not defined in sql/queries.sql: {missing}"


# --- schema names ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["pgjobs", "a", "_private", "Schema_1", "x" * 50])
def test_valid_schema_names(name: str) -> None:
    assert check_schema_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["a-b", "1x", 'x"; drop', "", "with space", "x" * 51, "a.b", "é", "x\x00", None, 5],
)
def test_invalid_schema_names(name: object) -> None:
    with pytest.raises(ConfigError, match="invalid schema name"):
        check_schema_name(name)  # type: ignore[arg-type]


def test_queries_validate_schema_name() -> None:
    with pytest.raises(ConfigError, match="invalid schema name"):
        Queries('x"; drop table jobs; --')


# --- migrations -----------------------------------------------------------------------------


def test_migrations_are_contiguous_from_one() -> None:
    found = migrations()
    assert found
    assert [m.version for m in found] == list(range(1, len(found) + 1))
    assert found[0].version == 1
    assert found[0].name == "initial"
    assert all(m.text.strip() for m in found)


def test_every_migration_file_is_picked_up() -> None:
    # A misnamed file ("2_add.sql", "0002-add.sql") would be skipped silently.
    files = sorted(p.name for p in (SQL_DIR / "migrations").iterdir() if p.suffix == ".sql")
    loaded = [f"{m.version:04d}_{m.name}.sql" for m in migrations()]
    assert loaded == files


def test_migration_text_matches_file() -> None:
    assert migrations()[0].text == INITIAL.read_text(encoding="utf-8")


def test_migrations_do_not_hardcode_the_schema() -> None:
    # Migrations run with search_path set to the target schema, so any schema name works.
    for migration in migrations():
        code = re.sub(r"--[^\n]*", "", migration.text)
        assert "pgjobs." not in code, migration.name


# --- JobState mirrors the Postgres enum -----------------------------------------------------


def _sql_values(fragment: str) -> list[str]:
    return re.findall(r"'([^']*)'", fragment)


def test_job_state_matches_postgres_enum() -> None:
    text = INITIAL.read_text(encoding="utf-8")
    match = re.search(r"CREATE TYPE job_state AS ENUM \(([^)]*)\)", text)
    assert match is not None
    assert _sql_values(match[1]) == [state.value for state in JobState]


def test_finished_states_match_table_constraints() -> None:
    # jobs holds the unfinished states, job_history the finished ones.
    text = INITIAL.read_text(encoding="utf-8")
    checks = re.findall(r"^\s*state\s+job_state\b.*CHECK \(state IN \(([^)]*)\)\)", text, re.M)
    assert len(checks) == 2
    hot, history = (set(_sql_values(c)) for c in checks)
    assert hot == {s.value for s in JobState if not s.finished}
    assert history == {s.value for s in JobState if s.finished}


def test_job_state_is_a_str_enum() -> None:
    assert JobState("dead") is JobState.DEAD
    assert isinstance(JobState.QUEUED, str)
    assert JobState.QUEUED.value == "queued"
    assert f"{JobState.RUNNING}" == "running"
    assert not JobState.QUEUED.finished
    assert not JobState.RUNNING.finished
    assert JobState.SUCCEEDED.finished
    assert JobState.DEAD.finished
    assert JobState.CANCELLED.finished
