"""Retry budgets: a token bucket per tenant, and a fleet-wide retry-ratio guard.

Both use integer arithmetic on `now_ms`, so the same calls give the same answers.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

__all__ = ["RetryRatioGuard", "TenantRetryBudget", "TokenBucket"]


class TokenBucket:
    """`capacity` tokens, refilled continuously at `refill_tokens` per `refill_window_ms`.

    Internally one token is `refill_window_ms` units, so refilling is exact.
    """

    __slots__ = ("_at_ms", "_capacity_units", "_rate", "_scale", "_units")

    def __init__(self, *, capacity: int, refill_tokens: int, refill_window_ms: int, now_ms: int) -> None:
        if capacity < 1 or refill_tokens < 0 or refill_window_ms < 1:
            raise ValueError("token bucket needs capacity >= 1, refill_tokens >= 0, refill_window_ms >= 1")
        self._scale = refill_window_ms
        self._rate = refill_tokens
        self._capacity_units = capacity * refill_window_ms
        self._units = self._capacity_units
        self._at_ms = now_ms

    def _refill(self, now_ms: int) -> None:
        if now_ms > self._at_ms:
            self._units = min(self._capacity_units, self._units + (now_ms - self._at_ms) * self._rate)
            self._at_ms = now_ms

    def tokens(self, now_ms: int) -> int:
        """Whole tokens available at `now_ms`."""
        self._refill(now_ms)
        return self._units // self._scale

    def is_full(self, now_ms: int) -> bool:
        self._refill(now_ms)
        return self._units >= self._capacity_units

    def try_take(self, now_ms: int) -> bool:
        self._refill(now_ms)
        if self._units < self._scale:
            return False
        self._units -= self._scale
        return True


@dataclass(frozen=True, slots=True, kw_only=True)
class TenantBudgetConfig:
    capacity: int = 40
    refill_per_minute: int = 20


class TenantRetryBudget:
    """One bucket per tenant, created full on the tenant's first retry.

    Memory: one bucket per tenant that retried recently; `prune` drops full buckets
    (a full bucket is the same as no bucket), so call it on a slow timer tick.
    """

    def __init__(self, *, config: TenantBudgetConfig | None = None) -> None:
        self.config = config or TenantBudgetConfig()
        self._buckets: dict[str, TokenBucket] = {}

    def try_spend(self, tenant_id: str, now_ms: int) -> bool:
        bucket = self._buckets.get(tenant_id)
        if bucket is None:
            bucket = TokenBucket(
                capacity=self.config.capacity,
                refill_tokens=self.config.refill_per_minute,
                refill_window_ms=60_000,
                now_ms=now_ms,
            )
            self._buckets[tenant_id] = bucket
        return bucket.try_take(now_ms)

    def tokens(self, tenant_id: str, now_ms: int) -> int:
        bucket = self._buckets.get(tenant_id)
        return self.config.capacity if bucket is None else bucket.tokens(now_ms)

    def prune(self, now_ms: int) -> int:
        """Forget full buckets; returns how many were dropped."""
        full = [tenant for tenant, bucket in self._buckets.items() if bucket.is_full(now_ms)]
        for tenant in full:
            del self._buckets[tenant]
        return len(full)


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryRatioConfig:
    limit: float = 0.40  # retries above this share of primary dispatches...
    window_ms: int = 300_000  # ...over this sliding window...
    blocked_below: str = "p1"  # ...block retries of priorities below this one (p2, p3)
    min_sample: int = 20  # primaries + retries in the window before the guard can engage
    bucket_ms: int = 10_000  # window resolution; memory is window_ms / bucket_ms counters

    def __post_init__(self) -> None:
        if self.window_ms % self.bucket_ms or self.bucket_ms < 1:
            raise ValueError("retry ratio window_ms must be a positive multiple of bucket_ms")


class RetryRatioGuard:
    """Blocks low-priority retries while retries exceed `limit` × primary dispatches.

    Counts live in `window_ms / bucket_ms` time buckets; the window slides a bucket at a
    time. The minimum sample keeps a quiet daemon's first failure from blocking retries.
    """

    def __init__(self, *, config: RetryRatioConfig | None = None) -> None:
        self.config = config or RetryRatioConfig()
        self._buckets: deque[list[int]] = deque()  # [bucket index, primaries, retries]

    def record_primary(self, now_ms: int) -> None:
        self._bucket(now_ms)[1] += 1

    def record_retry(self, now_ms: int) -> None:
        self._bucket(now_ms)[2] += 1

    def counts(self, now_ms: int) -> tuple[int, int]:
        """(primary dispatches, retries) in the window ending at `now_ms`."""
        self._expire(now_ms)
        return sum(b[1] for b in self._buckets), sum(b[2] for b in self._buckets)

    def exceeded(self, now_ms: int) -> bool:
        primaries, retries = self.counts(now_ms)
        if primaries + retries < self.config.min_sample:
            return False
        return retries > self.config.limit * primaries

    def blocks(self, priority: str, now_ms: int) -> bool:
        """True when a retry of this priority must be dropped now ("p2" > "p1" sorts lower)."""
        return priority > self.config.blocked_below and self.exceeded(now_ms)

    def _expire(self, now_ms: int) -> None:
        oldest = now_ms // self.config.bucket_ms - self.config.window_ms // self.config.bucket_ms + 1
        while self._buckets and self._buckets[0][0] < oldest:
            self._buckets.popleft()

    def _bucket(self, now_ms: int) -> list[int]:
        self._expire(now_ms)
        index = now_ms // self.config.bucket_ms
        if not self._buckets or self._buckets[-1][0] < index:
            self._buckets.append([index, 0, 0])
        return self._buckets[-1]
