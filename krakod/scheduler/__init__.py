"""The scheduler's decision logic: node registry, placement pipeline, retries.

Pure and deterministic: nothing here does I/O or reads the clock; every time-dependent
call takes `now_ms` (monotonic milliseconds). The daemon appends the payloads these
objects return and feeds them what it observes.
"""

from krakod.scheduler.backoff import BackoffConfig, backoff_ms
from krakod.scheduler.breaker import BreakerBoard, BreakerConfig, BreakerState, CircuitBreaker, Outcome, outcome_of
from krakod.scheduler.budget import (
    RetryRatioConfig,
    RetryRatioGuard,
    TenantBudgetConfig,
    TenantRetryBudget,
    TokenBucket,
)
from krakod.scheduler.congestion import CongestionConfig, CongestionMode, CongestionMonitor, CongestionSignals
from krakod.scheduler.filters import Filter, NodeGate, PlacementContext
from krakod.scheduler.health import HealthStatus, HealthThresholds, Measurements, MetricBands
from krakod.scheduler.placement import PlacementConfig, Scheduler, ScoreWeights, default_filters
from krakod.scheduler.registry import ALL_REGIONS, NodeHello, NodeRegistry, NodeState, RegistryConfig
from krakod.scheduler.request import KIND_CPU, KIND_LLM, PRIVACY_LOCAL_ONLY, PlacementRequest, TrustView
from krakod.scheduler.results import Candidate, Deferral, Placement
from krakod.scheduler.retry import AttemptError, RetryConfig, RetryDecision, RetryFacts, RetryPolicy

__all__ = [
    "ALL_REGIONS",
    "KIND_CPU",
    "KIND_LLM",
    "PRIVACY_LOCAL_ONLY",
    "AttemptError",
    "BackoffConfig",
    "BreakerBoard",
    "BreakerConfig",
    "BreakerState",
    "Candidate",
    "CircuitBreaker",
    "CongestionConfig",
    "CongestionMode",
    "CongestionMonitor",
    "CongestionSignals",
    "Deferral",
    "Filter",
    "HealthStatus",
    "HealthThresholds",
    "Measurements",
    "MetricBands",
    "NodeGate",
    "NodeHello",
    "NodeRegistry",
    "NodeState",
    "Outcome",
    "Placement",
    "PlacementConfig",
    "PlacementContext",
    "PlacementRequest",
    "RegistryConfig",
    "RetryConfig",
    "RetryDecision",
    "RetryFacts",
    "RetryPolicy",
    "RetryRatioConfig",
    "RetryRatioGuard",
    "Scheduler",
    "ScoreWeights",
    "TenantBudgetConfig",
    "TenantRetryBudget",
    "TokenBucket",
    "TrustView",
    "backoff_ms",
    "default_filters",
    "outcome_of",
]
