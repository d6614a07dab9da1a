"""Every operations command fails with one clear line and exit code 1, never a traceback:
bad DSN, unreachable server, schema not migrated."""

from __future__ import annotations

import socket

import pytest
from cli_runner import error_line, pgjobs

COMMANDS = [
    ("stats",),
    ("jobs", "ls"),
    ("jobs", "show", "1"),
    ("jobs", "retry", "1"),
    ("jobs", "retry", "--all-dead"),
    ("jobs", "cancel", "1"),
    ("jobs", "purge", "--older-than", "7d"),
    ("queues", "ls"),
    ("queues", "pause", "q"),
    ("queues", "resume", "q"),
    ("workers", "ls"),
    ("enqueue", "some.task"),
]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_an_invalid_dsn(command: tuple[str, ...]) -> None:
    result = pgjobs(*command, dsn="host=localhost port=notaport ==", expect=1)
    assert error_line(result).startswith("error: invalid DSN")


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_an_unreachable_server_without_leaking_the_password(command: tuple[str, ...]) -> None:
    dsn = f"postgresql://app:hunter2@127.0.0.1:{_closed_port()}/app"
    result = pgjobs(*command, dsn=dsn, expect=1)
    line = error_line(result)
    assert line.startswith("error: cannot talk to Postgres at 127.0.0.1:")
    assert "hunter2" not in result.stdout + result.stderr


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_schema_that_is_not_migrated(dsn: str, command: tuple[str, ...]) -> None:
    result = pgjobs(*command, "--schema", "not_migrated", dsn=dsn, expect=1)
    line = error_line(result)
    assert "not_migrated" in line
    assert "pgjobs migrate" in line


def test_a_bad_worker_option_is_one_clear_error(dsn: str) -> None:
    result = pgjobs("worker", "some.module:app", "--log-format", "xml", dsn=dsn, expect=1)
    assert error_line(result) == "error: log format must be 'text' or 'json', got 'xml'"
