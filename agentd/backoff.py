"""Exponential backoff with jitter for reconnects."""

from __future__ import annotations

import random


class Backoff:
    """Delays of base * 2**n, capped, with "equal jitter": each delay lies in [ceiling/2, ceiling].

    Jitter spreads a fleet of agents that lost the same daemon; keeping half the ceiling
    fixed means a delay is never close to zero, so a down daemon is not hammered.
    """

    def __init__(self, *, base_s: float, cap_s: float, rng: random.Random | None = None) -> None:
        if base_s <= 0 or cap_s < base_s:
            raise ValueError("backoff needs 0 < base_s <= cap_s")
        self._base_s = base_s
        self._cap_s = cap_s
        self._rng = rng or random.Random()
        self._failures = 0

    @property
    def failures(self) -> int:
        """Consecutive failures since the last reset."""
        return self._failures

    def next_delay_s(self) -> float:
        # The exponent is bounded so the float never overflows on a very long outage.
        ceiling_s = min(self._cap_s, self._base_s * 2 ** min(self._failures, 32))
        self._failures += 1
        return ceiling_s / 2 + self._rng.uniform(0, ceiling_s / 2)

    def reset(self) -> None:
        self._failures = 0
