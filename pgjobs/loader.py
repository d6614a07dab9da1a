"""Finds the App a command line names as MODULE:ATTRIBUTE."""

from __future__ import annotations

import importlib
import os
import sys
from typing import TYPE_CHECKING

from pgjobs.errors import ConfigError

if TYPE_CHECKING:
    from pgjobs.app import App


def load_app(path: str) -> App:
    from pgjobs.app import App

    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigError(f"expected MODULE:APP (like myproject.jobs:app), got {path!r}")
    if os.getcwd() not in sys.path:  # like `python -m`, find modules in the current directory
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ConfigError(f"cannot import module {module_name!r}: {exc}") from exc
        raise
    app = module
    for part in attribute.split("."):
        try:
            app = getattr(app, part)
        except AttributeError:
            raise ConfigError(f"module {module_name!r} has no attribute {attribute!r}") from None
    if not isinstance(app, App):
        raise ConfigError(f"{path!r} is a {type(app).__name__}, not a pgjobs.App")
    return app
