"""`pgjobs bench` at tiny sizes against the test database: it reports figures and leaves no
`pgjobs_bench` schema behind, whether it finishes, fails or is interrupted."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from cli_runner import pgjobs

from pgjobs import bench

TINY = {"jobs": 20, "workers": 1, "concurrency": 4, "latency_samples": 3, "rounds": 1}


def _bench_schema_exists(db: psycopg.Connection[Any]) -> bool:
    row = db.execute(
        "SELECT count(*) FROM pg_namespace WHERE nspname = %s", (bench.SCHEMA,)
    ).fetchone()
    assert row is not None
    return bool(row[0])


@pytest.fixture(autouse=True)
def _restore_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGJOBS_DSN", raising=False)  # bench.run sets it for its workers


@pytest.mark.timeout(180)
def test_a_finished_bench_drops_its_schema(dsn: str, db: psycopg.Connection[Any]) -> None:
    result = pgjobs(
        "bench", "--jobs", "20", "--concurrency", "4", "--latency-samples", "3",
        "--rounds", "1", "--json", dsn=dsn,
    )  # fmt: skip
    report = json.loads(result.stdout)
    assert report["jobs"] == 20
    assert report["drain_per_s"] > 0
    assert set(report["latency_ms"]) == {"p50", "p95", "p99"}
    assert not _bench_schema_exists(db)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("failure", [KeyboardInterrupt, RuntimeError])
def test_an_interrupted_or_failed_bench_drops_its_schema_too(
    dsn: str, db: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch, failure: type
) -> None:
    seen: list[bool] = []

    def interrupted(conn: Any, samples: int) -> dict[str, float]:
        seen.append(_bench_schema_exists(db))  # mid-run, with its workers up
        raise failure("stop")

    monkeypatch.setattr(bench, "_latency", interrupted)
    with pytest.raises(failure):
        bench.run(dsn, **TINY)
    assert seen == [True]
    assert not _bench_schema_exists(db)


def test_the_help_says_which_database_and_schema_it_uses() -> None:
    text = " ".join(pgjobs("bench", "--help").stdout.split())
    assert "PGJOBS_DSN" in text
    assert "embedded PostgreSQL" in text
    assert "pgjobs_bench" in text
    assert "PG*" not in text  # libpq's variables are not what it falls back to
