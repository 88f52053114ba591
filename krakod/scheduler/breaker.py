"""Circuit breakers per node: stop sending work to a node that keeps failing.

CLOSED → OPEN when, over the last `window_attempts` (60) outcomes, failures exceed
`failure_ratio` (50 %) with at least `min_attempts` (20) outcomes recorded — so two
early failures out of three do not open it — or when `timeout_limit` (20) timeouts
happen within `timeout_window_ms` (30 s).
OPEN → HALF_OPEN after `open_ms` (5 s).
HALF_OPEN lets one probe through per `probe_interval_ms` (5 s); `close_after_successes`
(5) successes close it; any failure opens it again.

Which results count is decided by `outcome_of`: node faults (execution errors, resource
exhaustion, model unavailable, rate limiting, unknown handler, auth) are failures,
TIMEOUT and an expired claim lease are timeouts; the unit's own faults (VALIDATION_ERROR,
BUDGET_EXCEEDED) and cancellations do not count at all.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["BreakerBoard", "BreakerConfig", "BreakerState", "CircuitBreaker", "Outcome", "outcome_of"]


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Outcome(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    TIMEOUT = "timeout"


LEASE_EXPIRED = "LEASE_EXPIRED"  # the daemon's code for workunit.claim.expired
_TIMEOUT_CODES = frozenset({"TIMEOUT", LEASE_EXPIRED})
_FAILURE_CODES = frozenset(
    {"EXECUTION_ERROR", "RESOURCE_EXHAUSTED", "MODEL_UNAVAILABLE", "RATE_LIMITED", "UNKNOWN_HANDLER", "AUTH_ERROR"}
)


def outcome_of(error_code: str | None) -> Outcome | None:
    """Success for None, failure or timeout for node faults, None for codes that do not count."""
    if error_code is None:
        return Outcome.SUCCESS
    if error_code in _TIMEOUT_CODES:
        return Outcome.TIMEOUT
    if error_code in _FAILURE_CODES:
        return Outcome.FAILURE
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerConfig:
    window_attempts: int = 60
    failure_ratio: float = 0.5
    min_attempts: int = 20
    timeout_limit: int = 20
    timeout_window_ms: int = 30_000
    open_ms: int = 5_000
    probe_interval_ms: int = 5_000
    close_after_successes: int = 5

    def __post_init__(self) -> None:
        if not 1 <= self.min_attempts <= self.window_attempts:
            raise ValueError("breaker config needs 1 <= min_attempts <= window_attempts")
        if not 0.0 < self.failure_ratio < 1.0:
            raise ValueError("breaker failure_ratio must be within (0, 1)")
        if self.timeout_limit < 1 or self.close_after_successes < 1:
            raise ValueError("breaker timeout_limit and close_after_successes must be at least 1")


class CircuitBreaker:
    """One node's breaker. Time only moves through the `now_ms` arguments."""

    def __init__(self, *, config: BreakerConfig | None = None) -> None:
        self.config = config or BreakerConfig()
        self._state = BreakerState.CLOSED
        self._outcomes: deque[bool] = deque(maxlen=self.config.window_attempts)  # True = failure
        self._timeouts: deque[int] = deque(maxlen=self.config.timeout_limit)
        self._opened_at_ms = 0
        self._probe_at_ms: int | None = None
        self._successes = 0

    def state(self, now_ms: int) -> BreakerState:
        if self._state is BreakerState.OPEN and now_ms - self._opened_at_ms >= self.config.open_ms:
            self._state = BreakerState.HALF_OPEN
            self._probe_at_ms = None
            self._successes = 0
        return self._state

    def allows(self, now_ms: int) -> bool:
        """May work be sent now? HALF_OPEN: only when no probe went out in the last interval."""
        state = self.state(now_ms)
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN:
            return False
        return self._probe_at_ms is None or now_ms - self._probe_at_ms >= self.config.probe_interval_ms

    def dispatched(self, now_ms: int) -> None:
        """Work was sent; in HALF_OPEN that uses the probe of this interval."""
        if self.state(now_ms) is BreakerState.HALF_OPEN:
            self._probe_at_ms = now_ms

    def record(self, outcome: Outcome, now_ms: int) -> BreakerState | None:
        """Count one result; returns the new state when it changed."""
        state = self.state(now_ms)
        if state is BreakerState.OPEN:
            return None  # results of work sent before it opened say nothing new
        failed = outcome is not Outcome.SUCCESS
        if state is BreakerState.HALF_OPEN:
            if failed:
                return self._open(now_ms)
            self._successes += 1
            if self._successes < self.config.close_after_successes:
                return None
            self._state = BreakerState.CLOSED
            self._outcomes.clear()
            self._timeouts.clear()
            return BreakerState.CLOSED
        self._outcomes.append(failed)
        if outcome is Outcome.TIMEOUT:
            self._timeouts.append(now_ms)
        return self._open(now_ms) if self._should_open() else None

    def _should_open(self) -> bool:
        config = self.config
        timeouts = self._timeouts
        if len(timeouts) >= config.timeout_limit and timeouts[-1] - timeouts[0] <= config.timeout_window_ms:
            return True
        total = len(self._outcomes)
        return total >= config.min_attempts and sum(self._outcomes) > config.failure_ratio * total

    def _open(self, now_ms: int) -> BreakerState:
        self._state = BreakerState.OPEN
        self._opened_at_ms = now_ms
        self._successes = 0
        return BreakerState.OPEN


class BreakerBoard:
    """All nodes' breakers; a node without one is closed. Implements placement's NodeGate."""

    def __init__(self, *, config: BreakerConfig | None = None) -> None:
        self.config = config or BreakerConfig()
        self._breakers: dict[str, CircuitBreaker] = {}

    def allows(self, node_id: str, now_ms: int) -> bool:
        breaker = self._breakers.get(node_id)
        return breaker is None or breaker.allows(now_ms)

    def dispatched(self, node_id: str, now_ms: int) -> None:
        breaker = self._breakers.get(node_id)
        if breaker is not None:
            breaker.dispatched(now_ms)

    def record(self, node_id: str, error_code: str | None, now_ms: int) -> BreakerState | None:
        """Count an attempt's result on its node (error_code None = success)."""
        outcome = outcome_of(error_code)
        if outcome is None:
            return None
        breaker = self._breakers.get(node_id)
        if breaker is None:
            breaker = self._breakers[node_id] = CircuitBreaker(config=self.config)
        return breaker.record(outcome, now_ms)

    def state(self, node_id: str, now_ms: int) -> BreakerState:
        breaker = self._breakers.get(node_id)
        return BreakerState.CLOSED if breaker is None else breaker.state(now_ms)

    def forget(self, node_id: str) -> None:
        self._breakers.pop(node_id, None)
