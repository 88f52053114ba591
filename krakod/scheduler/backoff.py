"""Deterministic retry backoff: the delay depends only on (work_unit_id, attempt).

delay = base · 2^(attempt−1) · (1 + jitter), jitter in [0, 20 %] from
sha256(f"{work_unit_id}:{attempt}"), then × the congestion multiplier, capped at 30 s.
All integer arithmetic, so every platform and every replay computes the same delay.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

__all__ = ["BackoffConfig", "backoff_ms"]

_PPM = 1_000_000


@dataclass(frozen=True, slots=True, kw_only=True)
class BackoffConfig:
    base_ms: int = 500
    cap_ms: int = 30_000
    jitter_max_ppm: int = 200_000  # parts per million of the exponential delay: 20 %

    def __post_init__(self) -> None:
        if not 0 < self.base_ms <= self.cap_ms:
            raise ValueError("backoff config needs 0 < base_ms <= cap_ms")
        if not 0 <= self.jitter_max_ppm <= _PPM:
            raise ValueError("backoff jitter_max_ppm must be within [0, 1_000_000]")


def backoff_ms(work_unit_id: str, attempt: int, *, config: BackoffConfig | None = None, multiplier: float = 1.0) -> int:
    """Milliseconds to wait before the attempt after `attempt` (the 1-based attempt that failed)."""
    if attempt < 1:
        raise ValueError(f"attempt starts at 1, got {attempt}")
    config = config or BackoffConfig()
    # The exponent stops growing once past the cap, so huge attempts stay cheap.
    exponential = min(config.base_ms << min(attempt - 1, 32), config.cap_ms * 2)
    digest = hashlib.sha256(f"{work_unit_id}:{attempt}".encode()).digest()
    jitter_ppm = int.from_bytes(digest[:8], "big") % (config.jitter_max_ppm + 1)
    delay = exponential + exponential * jitter_ppm // _PPM
    delay = delay * round(multiplier * 1000) // 1000
    return min(delay, config.cap_ms)
