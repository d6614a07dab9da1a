"""`pgjobs demo` as the README runs it: a real process, an embedded or a given Postgres."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg

PGJOBS = Path(sys.executable).parent / "pgjobs"
COLUMNS = ["queue", "queued", "scheduled", "running", "retrying", "succeeded", "dead"]
LIMIT = 240  # seconds; generous: the first start of an embedded server runs initdb


def _run_demo(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PGJOBS_", "PG"))}
    env.update(XDG_CACHE_HOME=str(tmp_path / "cache"), COLUMNS="200", TMPDIR=str(tmp_path))
    return subprocess.run(
        [str(PGJOBS), "demo", *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=LIMIT,
        check=False,
    )


def _final_counts(stdout: str) -> dict[str, dict[str, int]]:
    """The rows of the final table, by queue (and "total")."""
    table = stdout.split("pgjobs demo: final counts", 1)[1]
    rows: dict[str, dict[str, int]] = {}
    header: list[str] = []
    for line in table.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃]", line)[1:-1]]
        if not cells:
            continue
        if cells[0] == "queue":
            header = cells
        elif header:
            rows[cells[0]] = {
                name: int(value) for name, value in zip(header[1:], cells[1:], strict=True)
            }
    assert header[: len(COLUMNS)] == COLUMNS, table
    return rows


def _processes_with(marker: str) -> list[int]:
    """Live processes whose environment holds `marker` (the demo's workers and server)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            if marker.encode() in environ:
                found.append(int(entry.name))
    return found


def test_demo_on_the_embedded_server(tmp_path: Path) -> None:
    result = _run_demo(tmp_path, "--seconds", "5")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "starting the embedded Postgres" in result.stdout
    counts = _final_counts(result.stdout)
    assert counts["total"]["succeeded"] > 0, result.stdout
    assert counts["total"]["dead"] >= 1, result.stdout
    assert counts["payments"]["dead"] >= 1  # order 13 or a cancelled order
    assert counts["total"]["failed attempts"] >= counts["total"]["dead"]
    assert set(counts) >= {"email", "images", "payments", "total"}
    # The embedded server was stopped and no worker process outlived the demo.
    data_dir = tmp_path / "cache" / "pgjobs" / "embedded-pg"
    assert (data_dir / "PG_VERSION").is_file()
    assert not (data_dir / "postmaster.pid").exists()
    assert _processes_with(f"XDG_CACHE_HOME={tmp_path}") == []
    log = next(tmp_path.glob("pgjobs-demo-*.log")).read_text()
    assert log.count("registered (pid") >= 2  # two worker processes


def test_demo_with_a_dsn_uses_that_server(tmp_path: Path, db: psycopg.Connection[Any]) -> None:
    info = db.info
    dsn = f"host={info.host} port={info.port} dbname={info.dbname} user={info.user}"
    if info.password:
        dsn += f" password={info.password}"

    result = _run_demo(tmp_path, "--dsn", dsn, "--seconds", "3")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "embedded" not in result.stdout
    counts = _final_counts(result.stdout)
    finished = db.execute("SELECT count(*) FROM pgjobs_demo.job_history").fetchone()
    assert finished is not None
    assert finished[0] == counts["total"]["succeeded"] + counts["total"]["dead"] > 0
    assert not (tmp_path / "cache").exists()  # no embedded server was started
