"""`pgjobs enqueue TASK --kwargs JSON` through typer's CliRunner, against real Postgres."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from cli_runner import error_line, pgjobs

Conn = psycopg.Connection[Any]


def test_enqueue_by_name_with_json_arguments(dsn: str, db: Conn) -> None:
    result = pgjobs(
        "enqueue",
        "reports.build",
        "--kwargs",
        '{"report_id": 7, "tags": ["a", "ü"]}',
        "--args",
        "[1]",
        "--queue",
        "reports",
        "--priority",
        "5",
        "--dedup-key",
        "report:7",
        dsn=dsn,
    )
    job_id = int(result.stdout.strip())
    row = db.execute(
        "SELECT task, queue, args, kwargs, priority, dedup_key FROM pgjobs.jobs WHERE id = %s",
        (job_id,),
    ).fetchone()
    assert row == ("reports.build", "reports", [1], {"report_id": 7, "tags": ["a", "ü"]}, 5,
                   "report:7")  # fmt: skip
    again = pgjobs("enqueue", "reports.build", "--dedup-key", "report:7", dsn=dsn)
    assert int(again.stdout.strip()) == job_id


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--kwargs", "{not json", "error: --kwargs is not valid JSON"),
        ("--kwargs", "[1, 2]", "error: --kwargs must be a JSON"),
        ("--args", '{"a": 1}', "error: --args must be a JSON"),
    ],
)
def test_malformed_json_is_one_clear_error(
    dsn: str, db: Conn, option: str, value: str, message: str
) -> None:
    result = pgjobs("enqueue", "reports.build", option, value, dsn=dsn, expect=1)
    assert error_line(result).startswith(message)
    assert db.execute("SELECT count(*) FROM pgjobs.jobs").fetchone() == (0,)
