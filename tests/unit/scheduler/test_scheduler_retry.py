"""Retry decisions, the per-tenant budget, the retry-ratio guard and congestion mode."""

from __future__ import annotations

import pytest

from krakod.scheduler import (
    AttemptError,
    CongestionMode,
    CongestionMonitor,
    CongestionSignals,
    RetryFacts,
    RetryPolicy,
    RetryRatioGuard,
    TenantRetryBudget,
    TokenBucket,
    backoff_ms,
)

RETRYABLE = AttemptError(error_code="EXECUTION_ERROR", retryable=True)
CALM = CongestionSignals(queue_depth=0, dispatch_latency_p95_ms=0, unhealthy_fraction=0.0)
BUSY = CongestionSignals(queue_depth=801, dispatch_latency_p95_ms=0, unhealthy_fraction=0.0)


def facts(**overrides: object) -> RetryFacts:
    fields: dict[str, object] = {"work_unit_id": "wu-1", "tenant_id": "t1", "attempt": 1, "idempotent": True}
    return RetryFacts(**{**fields, **overrides})  # type: ignore[arg-type]


def high_congestion() -> CongestionMonitor:
    monitor = CongestionMonitor()
    monitor.observe(BUSY, now_ms=0)
    return monitor


@pytest.mark.parametrize(
    ("unit", "error", "congestion", "expected"),
    [
        pytest.param(facts(), RETRYABLE, None, "retry", id="an idempotent unit with a retryable error is retried"),
        pytest.param(facts(idempotent=False), RETRYABLE, None, "not_idempotent",
                     id="a unit that is not idempotent is never retried"),
        pytest.param(facts(), AttemptError(error_code="VALIDATION_ERROR", retryable=False), None, "not_retryable",
                     id="a non-retryable error is never retried"),
        pytest.param(facts(attempt=3), RETRYABLE, None, "attempts_exhausted",
                     id="the default of three attempts is the limit"),
        pytest.param(facts(attempt=4, max_attempts=5), RETRYABLE, None, "retry",
                     id="a unit may ask for up to five attempts"),
        pytest.param(facts(attempt=5, max_attempts=9), RETRYABLE, None, "attempts_exhausted",
                     id="no unit gets more than five attempts"),
        pytest.param(facts(attempt=3, max_attempts=5), RETRYABLE, "high", "attempts_exhausted_congestion",
                     id="congestion cuts a non-critical unit to three attempts"),
        pytest.param(facts(attempt=3, max_attempts=5, priority="p1"), RETRYABLE, "high", "retry",
                     id="congestion leaves a critical unit its attempts"),
    ],
)
def test_retry_decisions(unit: RetryFacts, error: AttemptError, congestion: str | None, expected: str) -> None:
    policy = RetryPolicy(congestion=high_congestion() if congestion else None)
    decision = policy.decide(unit, error, now_ms=0)
    assert decision.reason == expected
    assert decision.retry is (expected == "retry")


def test_a_scheduled_retry_carries_the_next_attempt_and_the_backoff() -> None:
    decision = RetryPolicy().decide(facts(attempt=2), RETRYABLE, now_ms=0)
    assert decision.event_type == "workunit.retry.scheduled"
    assert decision.to_payload() == {"attempt": 3, "delay_ms": 1167, "error_code": "EXECUTION_ERROR"}
    assert decision.delay_ms == backoff_ms("wu-1", 2)


def test_a_dropped_retry_names_its_reason() -> None:
    decision = RetryPolicy().decide(facts(idempotent=False), RETRYABLE, now_ms=0)
    assert decision.event_type == "workunit.retry.dropped"
    assert decision.to_payload() == {"attempt": 1, "reason": "not_idempotent"}


def test_congestion_multiplies_the_backoff() -> None:
    decision = RetryPolicy(congestion=high_congestion()).decide(facts(attempt=2), RETRYABLE, now_ms=0)
    assert decision.delay_ms == 1750


def test_the_token_bucket_refills_continuously() -> None:
    bucket = TokenBucket(capacity=2, refill_tokens=20, refill_window_ms=60_000, now_ms=0)
    assert bucket.try_take(0) and bucket.try_take(0) and not bucket.try_take(0)
    assert not bucket.try_take(2_999)  # one token every 3 s
    assert bucket.try_take(3_000)
    assert bucket.tokens(1_000_000) == 2  # never above capacity


def test_a_tenant_gets_forty_retries_then_twenty_a_minute() -> None:
    budget = TenantRetryBudget()
    assert sum(budget.try_spend("t1", 0) for _ in range(50)) == 40
    assert budget.try_spend("t2", 0)  # tenants do not share a bucket
    assert sum(budget.try_spend("t1", 60_000) for _ in range(50)) == 20
    assert budget.prune(10 * 60_000) == 2
    assert budget.tokens("t1", 10 * 60_000) == 40


def test_the_policy_drops_retries_beyond_the_tenant_budget() -> None:
    policy = RetryPolicy()
    for i in range(40):
        policy.record_dispatch(i)  # enough primaries to keep the ratio guard quiet
        policy.record_dispatch(i)
        policy.record_dispatch(i)
    reasons = [policy.decide(facts(work_unit_id=f"wu-{i}", priority="p0"), RETRYABLE, now_ms=100).reason
               for i in range(41)]
    assert reasons == ["retry"] * 40 + ["tenant_retry_budget_exhausted"]
    assert policy.decide(facts(work_unit_id="late", priority="p0"), RETRYABLE, now_ms=3_100).retry


def test_the_retry_ratio_guard_engages_and_releases() -> None:
    guard = RetryRatioGuard()  # 10 s buckets over a 5 min window
    for _ in range(50):
        guard.record_primary(0)
    for _ in range(20):
        guard.record_retry(10_000)
    assert not guard.exceeded(10_000)  # 20 of 50 is exactly 40 %
    guard.record_retry(12_000)
    assert guard.exceeded(12_000)
    assert guard.blocks("p2", 12_000) and guard.blocks("p3", 12_000)
    assert not guard.blocks("p1", 12_000) and not guard.blocks("p0", 12_000)
    assert guard.counts(299_999) == (50, 21)
    assert guard.counts(300_000) == (0, 21)  # the primaries' bucket slid out of the window
    assert guard.counts(310_000) == (0, 0)
    assert not guard.exceeded(310_000)


def test_the_retry_ratio_guard_needs_a_minimum_sample() -> None:
    guard = RetryRatioGuard()
    for _ in range(19):
        guard.record_retry(0)
    assert not guard.exceeded(0)
    guard.record_retry(0)
    assert guard.exceeded(0)


def test_the_policy_blocks_low_priority_retries_while_the_ratio_is_high() -> None:
    policy = RetryPolicy()
    for _ in range(30):
        policy.ratio.record_retry(0)
    assert policy.decide(facts(priority="p2"), RETRYABLE, now_ms=0).reason == "retry_ratio_exceeded"
    assert policy.decide(facts(priority="p1"), RETRYABLE, now_ms=0).retry


def test_congestion_goes_high_on_each_rule_and_names_it() -> None:
    rules = []
    for signals in (
        CongestionSignals(queue_depth=801, dispatch_latency_p95_ms=0, unhealthy_fraction=0.0),
        CongestionSignals(queue_depth=0, dispatch_latency_p95_ms=3_001, unhealthy_fraction=0.0),
        CongestionSignals(queue_depth=0, dispatch_latency_p95_ms=0, unhealthy_fraction=0.31),
    ):
        monitor = CongestionMonitor()
        assert monitor.observe(CongestionSignals(queue_depth=800, dispatch_latency_p95_ms=3_000,
                                                 unhealthy_fraction=0.3), now_ms=0) is None
        change = monitor.observe(signals, now_ms=1)
        assert change is not None and (change["from"], change["to"]) == ("normal", "high")
        rules.append(change["rule"])
    assert rules == ["queue_depth>800", "dispatch_latency_p95_ms>3000", "unhealthy_fraction>0.3"]


def test_congestion_returns_to_normal_only_after_a_calm_period() -> None:
    monitor = CongestionMonitor()
    monitor.observe(BUSY, now_ms=0)
    assert monitor.observe(CALM, now_ms=1_000) is None
    assert monitor.observe(BUSY, now_ms=20_000) is None  # calm interrupted: the clock restarts
    assert monitor.observe(CALM, now_ms=21_000) is None
    assert monitor.observe(CALM, now_ms=50_999) is None
    change = monitor.observe(CALM, now_ms=51_000)
    assert change == {"from": "high", "to": "normal", "rule": "calm_for_30000ms"}
    assert monitor.mode is CongestionMode.NORMAL
    assert monitor.backoff_multiplier() == 1.0
