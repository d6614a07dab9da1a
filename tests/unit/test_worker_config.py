"""pgjobs.worker.WorkerConfig: settings are checked when they are made."""

from __future__ import annotations

import pytest

from pgjobs.worker import WorkerConfig


def test_rescue_grace_defaults_to_five_seconds_and_must_be_positive() -> None:
    assert WorkerConfig().rescue_grace == 5.0
    assert WorkerConfig(rescue_grace=0.5).rescue_grace == 0.5
    for bad in (0, -1):
        with pytest.raises(ValueError, match="rescue_grace must be positive"):
            WorkerConfig(rescue_grace=bad)
