"""pgjobs.producer.batches: how a big enqueue_many is split into statements."""

from __future__ import annotations

import pytest

from pgjobs import producer


def test_a_small_call_is_one_statement() -> None:
    assert producer.batches(["{}", '{"a":1}']) == [["{}", '{"a":1}']]


def test_rows_split_at_the_row_limit_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(producer, "BATCH_ROWS", 2)
    items = [f'{{"n":{n}}}' for n in range(5)]
    parts = producer.batches(items)
    assert parts == [items[0:2], items[2:4], items[4:5]]


def test_rows_split_by_size_and_a_huge_row_goes_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(producer, "BATCH_CHARS", 10)
    items = ["x" * 4, "x" * 4, "x" * 4, "x" * 30, "x"]
    assert producer.batches(items) == [items[0:2], items[2:3], items[3:4], items[4:5]]
