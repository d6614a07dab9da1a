"""Retry delays: exponential, capped and jittered."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Delay before retry n (1-based) = min(max, initial * factor**(n-1)), +/- jitter fraction."""

    initial: float = 1.0
    factor: float = 2.0
    max: float = 3600.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        for name in ("initial", "factor", "max"):
            value = getattr(self, name)
            if not math.isfinite(value):
                raise ValueError(f"Backoff {name} must be a finite number, got {value}")
        if self.initial < 0 or self.max < 0:
            raise ValueError(f"Backoff delays must not be negative: {self}")
        if self.factor < 1:
            raise ValueError(f"Backoff factor must be >= 1, got {self.factor}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"Backoff jitter must be within [0, 1], got {self.jitter}")

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        exponent = max(0, attempt - 1)
        try:
            base = min(self.max, self.initial * self.factor**exponent)
        except OverflowError:
            base = self.max
        if self.jitter == 0 or base == 0:
            return base
        spread = (rng or random).uniform(-self.jitter, self.jitter)
        return max(0.0, base * (1 + spread))
