"""Congestion mode: NORMAL or HIGH, from queue depth, dispatch latency and node health.

HIGH when any of: queue depth > 800, p95 dispatch latency > 3 s, more than 30 % of the
connected nodes unhealthy. Back to NORMAL only after every signal has stayed at or
below its threshold for `calm_ms` (30 s), so the mode cannot flap on every tick: at most
one HIGH → NORMAL change per `calm_ms`, hence at most 2 × 3600 / 30 = 240
congestion.mode.changed events per hour.

In HIGH, retry backoff is multiplied by `backoff_multiplier` (1.5) and non-critical units
(priorities p2 and p3; p0 and p1 are critical) get at most `high_max_attempts` (3).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["CongestionConfig", "CongestionMode", "CongestionMonitor", "CongestionSignals"]


class CongestionMode(StrEnum):
    NORMAL = "normal"
    HIGH = "high"


@dataclass(frozen=True, slots=True, kw_only=True)
class CongestionConfig:
    queue_depth_above: int = 800
    dispatch_latency_p95_ms_above: int = 3_000
    unhealthy_fraction_above: float = 0.30
    calm_ms: int = 30_000
    backoff_multiplier: float = 1.5
    high_max_attempts: int = 3
    critical_priorities: frozenset[str] = frozenset({"p0", "p1"})

    def __post_init__(self) -> None:
        if self.backoff_multiplier < 1.0 or self.high_max_attempts < 1 or self.calm_ms < 0:
            raise ValueError("congestion config needs backoff_multiplier >= 1, high_max_attempts >= 1, calm_ms >= 0")


@dataclass(frozen=True, slots=True, kw_only=True)
class CongestionSignals:
    queue_depth: int  # units waiting for placement (pending + deferred + in backoff)
    dispatch_latency_p95_ms: int  # submission (or retry due time) to claim, p95 of the last window
    unhealthy_fraction: float  # NodeRegistry.unhealthy_fraction()


class CongestionMonitor:
    """Holds the mode; `observe` on each timer tick returns a congestion.mode.changed payload or None."""

    def __init__(self, *, config: CongestionConfig | None = None) -> None:
        self.config = config or CongestionConfig()
        self.mode = CongestionMode.NORMAL
        self._calm_since_ms: int | None = None

    def observe(self, signals: CongestionSignals, *, now_ms: int) -> dict[str, str] | None:
        rule = self._rule(signals)
        if self.mode is CongestionMode.NORMAL:
            if rule is None:
                return None
            return self._change(CongestionMode.HIGH, rule)
        if rule is not None:
            self._calm_since_ms = None
            return None
        if self._calm_since_ms is None:
            self._calm_since_ms = now_ms
        if now_ms - self._calm_since_ms < self.config.calm_ms:
            return None
        return self._change(CongestionMode.NORMAL, f"calm_for_{self.config.calm_ms}ms")

    @property
    def high(self) -> bool:
        return self.mode is CongestionMode.HIGH

    def backoff_multiplier(self) -> float:
        return self.config.backoff_multiplier if self.high else 1.0

    def max_attempts(self, priority: str, requested: int) -> int:
        """`requested` lowered to `high_max_attempts` for non-critical units in HIGH."""
        if self.high and priority not in self.config.critical_priorities:
            return min(requested, self.config.high_max_attempts)
        return requested

    def _rule(self, signals: CongestionSignals) -> str | None:
        config = self.config
        if signals.queue_depth > config.queue_depth_above:
            return f"queue_depth>{config.queue_depth_above}"
        if signals.dispatch_latency_p95_ms > config.dispatch_latency_p95_ms_above:
            return f"dispatch_latency_p95_ms>{config.dispatch_latency_p95_ms_above}"
        if signals.unhealthy_fraction > config.unhealthy_fraction_above:
            return f"unhealthy_fraction>{config.unhealthy_fraction_above:g}"
        return None

    def _change(self, to: CongestionMode, rule: str) -> dict[str, str]:
        payload = {"from": self.mode.value, "to": to.value, "rule": rule}
        self.mode = to
        self._calm_since_ms = None
        return payload
