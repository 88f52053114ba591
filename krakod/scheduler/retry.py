"""Retry decisions: whether a failed attempt is tried again, and after how long.

    policy = RetryPolicy(congestion=monitor)
    policy.record_dispatch(now_ms)                      # each first attempt placed
    decision = policy.decide(facts, AttemptError(...), now_ms=now_ms)
    append(decision.event_type, decision.to_payload())  # workunit.retry.scheduled / .dropped

Checks, in order (the first that fails names the drop reason):
1. the unit is idempotent                                 → "not_idempotent"
2. the error is retryable                                 → "not_retryable"
3. attempts remain: max_attempts (0 → default 3), never above the hard cap 5, and at
   most 3 for non-critical units (p2, p3) in congestion HIGH
                                                          → "attempts_exhausted" /
                                                            "attempts_exhausted_congestion"
4. retries are not above 40 % of primary dispatches over 5 minutes, or the unit is p0/p1
                                                          → "retry_ratio_exceeded"
5. the tenant's retry bucket (40 tokens, 20 per minute) has a token
                                                          → "tenant_retry_budget_exhausted"
Only a retry consumes a token and counts as a retry in the ratio.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from krakod.scheduler.backoff import BackoffConfig, backoff_ms
from krakod.scheduler.budget import RetryRatioConfig, RetryRatioGuard, TenantBudgetConfig, TenantRetryBudget
from krakod.scheduler.congestion import CongestionMonitor
from krakod.scheduler.request import PRIORITIES

__all__ = ["AttemptError", "RetryConfig", "RetryDecision", "RetryFacts", "RetryPolicy"]

RETRY_SCHEDULED = "workunit.retry.scheduled"
RETRY_DROPPED = "workunit.retry.dropped"


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryConfig:
    hard_max_attempts: int = 5
    default_max_attempts: int = 3
    backoff: BackoffConfig = field(default_factory=BackoffConfig)
    tenant_budget: TenantBudgetConfig = field(default_factory=TenantBudgetConfig)
    retry_ratio: RetryRatioConfig = field(default_factory=RetryRatioConfig)

    def __post_init__(self) -> None:
        if not 1 <= self.default_max_attempts <= self.hard_max_attempts:
            raise ValueError("retry config needs 1 <= default_max_attempts <= hard_max_attempts")


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryFacts:
    """The unit, as the daemon knows it when an attempt failed."""

    work_unit_id: str
    tenant_id: str
    attempt: int  # the attempt that failed, 1-based
    idempotent: bool
    priority: str = "p2"
    max_attempts: int = 0  # from the submission; 0 = default

    def __post_init__(self) -> None:
        if self.attempt < 1:
            raise ValueError(f"attempt starts at 1, got {self.attempt}")
        if self.priority not in PRIORITIES:
            raise ValueError(f"priority must be one of {PRIORITIES}, got {self.priority!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptError:
    error_code: str  # e.g. EXECUTION_ERROR, TIMEOUT, LEASE_EXPIRED
    retryable: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryDecision:
    retry: bool
    delay_ms: int  # 0 when dropped
    reason: str  # "retry" or the drop reason
    attempt: int  # the attempt that failed
    error_code: str

    @property
    def next_attempt(self) -> int:
        return self.attempt + 1

    @property
    def event_type(self) -> str:
        return RETRY_SCHEDULED if self.retry else RETRY_DROPPED

    def to_payload(self) -> dict[str, object]:
        if self.retry:
            return {"attempt": self.next_attempt, "delay_ms": self.delay_ms, "error_code": self.error_code}
        return {"attempt": self.attempt, "reason": self.reason}


class RetryPolicy:
    """Owns the retry budgets; reads the congestion mode. Call from one task."""

    def __init__(self, *, config: RetryConfig | None = None, congestion: CongestionMonitor | None = None) -> None:
        self.config = config or RetryConfig()
        self.congestion = congestion or CongestionMonitor()
        self.tenant_budget = TenantRetryBudget(config=self.config.tenant_budget)
        self.ratio = RetryRatioGuard(config=self.config.retry_ratio)

    def record_dispatch(self, now_ms: int) -> None:
        """A first attempt was placed (the denominator of the retry ratio)."""
        self.ratio.record_primary(now_ms)

    def max_attempts(self, unit: RetryFacts) -> int:
        requested = unit.max_attempts or self.config.default_max_attempts
        return self.congestion.max_attempts(unit.priority, min(requested, self.config.hard_max_attempts))

    def decide(self, unit: RetryFacts, error: AttemptError, *, now_ms: int) -> RetryDecision:
        reason = self._drop_reason(unit, error, now_ms)
        if reason is not None:
            return RetryDecision(
                retry=False, delay_ms=0, reason=reason, attempt=unit.attempt, error_code=error.error_code
            )
        self.ratio.record_retry(now_ms)
        delay_ms = backoff_ms(
            unit.work_unit_id,
            unit.attempt,
            config=self.config.backoff,
            multiplier=self.congestion.backoff_multiplier(),
        )
        return RetryDecision(
            retry=True, delay_ms=delay_ms, reason="retry", attempt=unit.attempt, error_code=error.error_code
        )

    def _drop_reason(self, unit: RetryFacts, error: AttemptError, now_ms: int) -> str | None:
        if not unit.idempotent:
            return "not_idempotent"
        if not error.retryable:
            return "not_retryable"
        if unit.attempt >= self.max_attempts(unit):
            requested = min(unit.max_attempts or self.config.default_max_attempts, self.config.hard_max_attempts)
            return "attempts_exhausted" if unit.attempt >= requested else "attempts_exhausted_congestion"
        if self.ratio.blocks(unit.priority, now_ms):
            return "retry_ratio_exceeded"
        if not self.tenant_budget.try_spend(unit.tenant_id, now_ms):
            return "tenant_retry_budget_exhausted"
        return None
