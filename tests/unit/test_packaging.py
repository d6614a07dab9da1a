"""The wheel carries the SQL (hatch force-include) and the `pgjobs` console script."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--disable-pip-version-check",
            "-q",
            "-w",
            str(out),
            str(REPO),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    wheels = list(out.glob("pgjobs-*.whl"))
    assert len(wheels) == 1, wheels
    return zipfile.ZipFile(wheels[0])


def test_wheel_ships_the_sql(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    assert "pgjobs/_sql/queries.sql" in names
    assert "pgjobs/_sql/migrations/0001_initial.sql" in names


def test_wheel_ships_every_migration_unchanged(wheel: zipfile.ZipFile) -> None:
    for path in [REPO / "sql" / "queries.sql", *(REPO / "sql" / "migrations").glob("*.sql")]:
        inside = "pgjobs/_sql/" + path.relative_to(REPO / "sql").as_posix()
        assert wheel.read(inside) == path.read_bytes(), inside


def test_wheel_ships_the_package(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    for path in (REPO / "pgjobs").rglob("*.py"):
        assert path.relative_to(REPO).as_posix() in names
    assert not any(name.startswith("tests/") for name in names)


def test_wheel_declares_the_console_script(wheel: zipfile.ZipFile) -> None:
    entry_points = next(n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt"))
    text = wheel.read(entry_points).decode()
    section = text.split("[console_scripts]", 1)[1]
    assert "pgjobs = pgjobs.cli:main" in section.splitlines()
