"""pgjobs.Backoff: exponential, capped, jittered retry delays."""

from __future__ import annotations

import math
import random

import pytest

from pgjobs import Backoff


def test_exponential_growth_without_jitter() -> None:
    backoff = Backoff(initial=1, factor=2, max=3600, jitter=0)
    assert [backoff.delay(n) for n in range(1, 7)] == [1, 2, 4, 8, 16, 32]


def test_other_initial_and_factor() -> None:
    backoff = Backoff(initial=0.5, factor=3, max=1000, jitter=0)
    assert [backoff.delay(n) for n in (1, 2, 3)] == [0.5, 1.5, 4.5]


def test_factor_one_is_constant() -> None:
    backoff = Backoff(initial=7, factor=1, max=100, jitter=0)
    assert {backoff.delay(n) for n in range(1, 20)} == {7}


def test_attempt_below_one_uses_initial() -> None:
    backoff = Backoff(initial=3, factor=2, max=100, jitter=0)
    assert backoff.delay(0) == 3
    assert backoff.delay(-5) == 3


def test_capped_at_max() -> None:
    backoff = Backoff(initial=1, factor=2, max=10, jitter=0)
    assert backoff.delay(4) == 8
    assert backoff.delay(5) == 10
    assert backoff.delay(50) == 10


def test_huge_attempt_does_not_overflow() -> None:
    backoff = Backoff(initial=1, factor=2, max=60, jitter=0)
    assert backoff.delay(100_000) == 60


def test_zero_jitter_is_exact_and_ignores_rng() -> None:
    backoff = Backoff(initial=2, factor=2, max=3600, jitter=0)
    assert backoff.delay(3, random.Random(1)) == 8.0
    assert backoff.delay(3, random.Random(2)) == 8.0


def test_zero_initial_means_no_delay_even_with_jitter() -> None:
    backoff = Backoff(initial=0, factor=2, max=60, jitter=0.5)
    assert backoff.delay(4, random.Random(0)) == 0


@pytest.mark.parametrize("jitter", [0.1, 0.5, 1.0])
def test_jitter_stays_within_bounds(jitter: float) -> None:
    backoff = Backoff(initial=10, factor=2, max=3600, jitter=jitter)
    rng = random.Random(1234)
    for attempt in (1, 2, 5):
        base = 10 * 2 ** (attempt - 1)
        delays = [backoff.delay(attempt, rng) for _ in range(500)]
        assert all(base * (1 - jitter) <= d <= base * (1 + jitter) for d in delays)
        assert all(d >= 0 for d in delays)
        # Jitter actually spreads the delays, on both sides of the base.
        assert min(delays) < base < max(delays)


def test_jitter_applies_around_the_cap() -> None:
    backoff = Backoff(initial=1, factor=2, max=100, jitter=0.2)
    rng = random.Random(7)
    delays = [backoff.delay(30, rng) for _ in range(200)]
    assert all(80 <= d <= 120 for d in delays)


def test_seeded_rng_is_reproducible() -> None:
    backoff = Backoff(initial=5, factor=2, max=3600, jitter=0.3)
    first = [backoff.delay(n, random.Random(99)) for n in range(1, 10)]
    second = [backoff.delay(n, random.Random(99)) for n in range(1, 10)]
    assert first == second
    assert first != [5 * 2 ** (n - 1) for n in range(1, 10)]


def test_defaults() -> None:
    backoff = Backoff()
    assert (backoff.initial, backoff.factor, backoff.max, backoff.jitter) == (1, 2, 3600, 0.1)
    assert 0.9 <= backoff.delay(1, random.Random(0)) <= 1.1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"initial": -1}, "must not be negative"),
        ({"max": -0.5}, "must not be negative"),
        ({"factor": 0.5}, "factor must be >= 1"),
        ({"jitter": -0.1}, r"jitter must be within \[0, 1\]"),
        ({"jitter": 1.5}, r"jitter must be within \[0, 1\]"),
        ({"jitter": math.nan}, r"jitter must be within \[0, 1\]"),
    ],
)
def test_invalid_arguments(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Backoff(**kwargs)


@pytest.mark.parametrize("field", ["initial", "factor", "max"])
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_arguments_rejected(field: str, value: float) -> None:
    # A NaN or infinite delay would reach Postgres' make_interval() and fail the ack batch.
    with pytest.raises(ValueError, match=field):
        Backoff(**{field: value})


def test_is_immutable() -> None:
    backoff = Backoff()
    with pytest.raises(AttributeError):
        backoff.initial = 5  # type: ignore[misc]
