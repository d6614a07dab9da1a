"""End to end: `pgjobs stats|migrate|enqueue|worker` with the nasty DSNs of
tests/unit/test_dsn_redaction.py fail in one line that shows no piece of the password.

The DSNs point at 127.0.0.1 port 1, where nothing listens; before the fix an unescaped '@'
or '/' in a URL password made these commands print pieces of it as host and database.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_runner import error_line, pgjobs
from nasty_dsns import DSNS, IDS, PIECES

ROOT = Path(__file__).resolve().parents[2]
CHAOS = ROOT / "tests" / "chaos"
PGJOBS = Path(sys.executable).parent / "pgjobs"


def _assert_clean(text: str) -> None:
    for piece in PIECES:
        assert piece not in text, text


@pytest.fixture(autouse=True)
def _no_password_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PGJOBS_DSN", "PGPASSWORD", "PGHOST", "PGPORT", "PGDATABASE"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("value", DSNS, ids=IDS)
@pytest.mark.parametrize(
    "command", [["stats"], ["migrate"], ["enqueue", "some.task"], ["jobs", "ls"]]
)
def test_cli_commands_never_print_any_piece_of_the_password(command: list[str], value: str) -> None:
    result = pgjobs(*command, dsn=value, expect=1)
    line = error_line(result)
    assert line.startswith(("error: invalid DSN (<dsn hidden>)", "error: cannot talk")), line
    _assert_clean(result.stdout + result.stderr)


@pytest.mark.parametrize(
    "value",
    [
        "postgresql://app:Zq9@Xk7/Wm3@127.0.0.1:1/app",  # refused before connecting
        "postgresql://app:Zq9?Xk7#Wm3@127.0.0.1:1/app",  # valid: libpq never prints it
        "host=127.0.0.1 port=1 user=app password=Zq9 Xk7 dbname=app",  # unreadable
    ],
)
@pytest.mark.parametrize("processes", ["1", "2"])
def test_worker_processes_never_print_any_piece_of_the_password(value: str, processes: str) -> None:
    environ = {k: v for k, v in os.environ.items() if k not in ("PGJOBS_DSN", "PGPASSWORD")}
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(CHAOS), environ.get("PYTHONPATH")]))
    done = subprocess.run(
        [str(PGJOBS), "worker", "chaosapp:app", "--processes", processes, "--dsn", value],
        check=False,
        cwd=CHAOS,
        env=environ,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "Traceback" not in output, output
    _assert_clean(output)
