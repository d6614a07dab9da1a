"""pgjobs.loader.load_app: MODULE:APP resolution and its errors."""

from __future__ import annotations

import importlib
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import pgjobs
from pgjobs import ConfigError
from pgjobs.loader import load_app

APP_SOURCE = """
import pgjobs

app = pgjobs.App(dsn="host=/nonexistent dbname=x")
not_an_app = 42

class Namespace:
    app = app

@app.task(name="hello")
def hello() -> None: ...
"""


@pytest.fixture
def module_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An isolated folder for throwaway modules; sys.path and sys.modules restored after."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.chdir(tmp_path)
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        del sys.modules[name]


def _write_module(folder: Path, source: str) -> str:
    name = f"pgjobs_loader_test_{uuid.uuid4().hex}"
    (folder / f"{name}.py").write_text(source, encoding="utf-8")
    importlib.invalidate_caches()
    return name


@pytest.mark.parametrize("path", ["myproject.jobs", "", ":app", "myproject:", ":"])
def test_needs_module_colon_attribute(path: str) -> None:
    with pytest.raises(ConfigError, match=r"expected MODULE:APP .*got"):
        load_app(path)


def test_unknown_module(module_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot import module 'no_such_module_pgjobs_x'"):
        load_app("no_such_module_pgjobs_x:app")


def test_unknown_submodule(module_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot import module 'pgjobs\.no_such_sub'"):
        load_app("pgjobs.no_such_sub:app")


def test_missing_dependency_inside_the_module_is_not_hidden(
    module_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(module_dir))
    name = _write_module(module_dir, "import a_dependency_that_is_not_installed_xyz\n")
    with pytest.raises(ModuleNotFoundError, match="a_dependency_that_is_not_installed_xyz"):
        load_app(f"{name}:app")


def test_missing_attribute(module_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(module_dir))
    name = _write_module(module_dir, APP_SOURCE)
    with pytest.raises(ConfigError, match=rf"module '{name}' has no attribute 'worker_app'"):
        load_app(f"{name}:worker_app")
    with pytest.raises(ConfigError, match=r"has no attribute 'Namespace\.nope'"):
        load_app(f"{name}:Namespace.nope")


def test_attribute_that_is_not_an_app(module_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(module_dir))
    name = _write_module(module_dir, APP_SOURCE)
    with pytest.raises(ConfigError, match=r"is a int, not a pgjobs\.App"):
        load_app(f"{name}:not_an_app")
    with pytest.raises(ConfigError, match=r"is a module, not a pgjobs\.App"):
        load_app("pgjobs:errors")


def test_loads_the_app(module_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(module_dir))
    name = _write_module(module_dir, APP_SOURCE)
    app = load_app(f"{name}:app")
    assert isinstance(app, pgjobs.App)
    assert app is sys.modules[name].app
    assert set(app.tasks) == {"hello"}


def test_loads_a_dotted_attribute(module_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(module_dir))
    name = _write_module(module_dir, APP_SOURCE)
    assert load_app(f"{name}:Namespace.app") is sys.modules[name].app


def test_finds_modules_in_the_current_directory(module_dir: Path) -> None:
    # Like `python -m`: no sys.path setup needed for a module next to where you run it.
    sys.path[:] = [entry for entry in sys.path if entry not in ("", ".", str(module_dir))]
    name = _write_module(module_dir, APP_SOURCE)
    app = load_app(f"{name}:app")
    assert isinstance(app, pgjobs.App)
