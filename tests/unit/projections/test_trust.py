"""Trust fold: Beta-Binomial reliability, timeout EWMA, health penalty, decay by event time; the publisher."""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from krakod.projections.runner import Item
from krakod.projections.trust import HOUR_US, TrustProjection
from krakod.projections.trust_publisher import trust_events

T0 = 1_767_225_600_000_000


class Fold:
    """A trust projection folding hand-made items into an in-memory database."""

    def __init__(self) -> None:
        self.conn = sqlite3.connect(":memory:", isolation_level=None)
        self.projection = TrustProjection()
        self.projection.create_schema(self.conn)
        self.projection.load(self.conn)
        self.seq = 0

    def apply(self, type_: str, ts_us: int, **payload: Any) -> Decimal:
        self.seq += 1
        item: Item = (self.seq, f"e{self.seq}", type_, ts_us, "t1", "s1", "wu", {"node_id": "n1", **payload})
        self.projection.apply(self.conn, [item])
        return self.projection.snapshot["n1"].score

    def success(self, ts_us: int = T0) -> Decimal:
        return self.apply("workunit.completed", ts_us, attempt=1)

    def timeout(self, ts_us: int = T0) -> Decimal:
        return self.apply("workunit.claim.expired", ts_us, attempt=1)

    def health(self, state: str, ts_us: int = T0) -> Decimal:
        return self.apply("node.health.updated", ts_us, health=state)


def test_a_new_node_scores_the_prior() -> None:
    assert Fold().health("healthy") == Decimal("0.500000")


def test_health_penalties_scale_the_score() -> None:
    fold = Fold()
    assert fold.health("degraded") == Decimal("0.400000")
    assert fold.health("unhealthy") == Decimal("0.250000")
    assert fold.health("healthy") == Decimal("0.500000")


def test_a_success_adds_to_alpha_and_a_timeout_to_beta_and_the_ewma() -> None:
    fold = Fold()
    assert fold.success() == Decimal("0.600000")  # 3 / 5
    fold.timeout()
    view = fold.projection.snapshot["n1"]
    assert (view.alpha, view.beta, view.timeout_ewma) == (Decimal(3), Decimal(3), Decimal("0.2"))
    assert view.score == Decimal("0.400000")  # 0.5 x (1 - 0.2)


def test_a_failure_with_a_timeout_code_counts_as_a_timeout() -> None:
    fold = Fold()
    fold.apply("workunit.failed", T0, attempt=1, error_code="run_timeout")
    fold.apply("workunit.failed", T0, attempt=2, error_code="handler_error")
    view = fold.projection.snapshot["n1"]
    assert (view.failures, view.timeouts, view.beta) == (2, 1, Decimal(4))


@settings(max_examples=25, deadline=None)
@given(st.lists(st.sampled_from(["success", "timeout", "failure", "healthy", "degraded", "unhealthy", "down"])))
def test_scores_stay_within_bounds(steps: list[str]) -> None:
    fold = Fold()
    for index, step in enumerate(steps):
        ts_us = T0 + index * HOUR_US // 3
        if step == "success":
            score = fold.success(ts_us)
        elif step == "timeout":
            score = fold.timeout(ts_us)
        elif step == "failure":
            score = fold.apply("workunit.failed", ts_us, attempt=1, error_code="oom")
        else:
            score = fold.health(step, ts_us)
        assert Decimal(0) <= score <= Decimal(1)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=HOUR_US - 1), min_size=2, max_size=40), st.integers(0, 20))
def test_repeated_timeouts_never_raise_the_score(gaps_us: list[int], successes: int) -> None:
    fold = Fold()
    for _ in range(successes):
        fold.success()
    ts_us, previous = T0, fold.health("healthy")
    for gap in gaps_us:
        ts_us += gap
        score = fold.timeout(ts_us)
        assert score <= previous
        previous = score


def test_decay_moves_toward_the_prior_by_event_time() -> None:
    fold = Fold()
    for _ in range(10):
        fold.timeout()
    low = fold.projection.snapshot["n1"].score
    later = [fold.health("healthy", T0 + hours * HOUR_US) for hours in (1, 2, 5, 24, 24 * 30)]
    assert low < later[0] < later[1] < later[2] < later[3] < later[4] <= Decimal("0.500000")
    assert later[-1] > Decimal("0.49")
    view = fold.projection.snapshot["n1"]
    assert view.beta > Decimal(2) and view.alpha == Decimal(2)


def test_less_than_an_hour_of_event_time_does_not_decay() -> None:
    fold = Fold()
    fold.timeout(T0)
    before = fold.projection.snapshot["n1"]
    fold.health("healthy", T0 + HOUR_US - 1)
    assert fold.projection.snapshot["n1"] == before


def test_the_publisher_quarantines_a_failing_node_and_lifts_it_on_recovery() -> None:
    fold = Fold()
    for _ in range(6):
        fold.timeout()
    events = trust_events(fold.projection.snapshot)
    assert [e.type for e in events] == ["trust.score.updated", "node.quarantined"]
    assert [e.idempotency_key for e in events] == ["trust:n1:1", "quarantine:n1:1"]
    for event in events:  # what the runner would fold after the publisher appended them
        fold.apply(event.type, T0, **event.payload)
    assert trust_events(fold.projection.snapshot) == []
    assert fold.projection.snapshot["n1"].quarantined

    for _ in range(40):
        fold.success(T0 + 48 * HOUR_US)
    recovery = trust_events(fold.projection.snapshot)
    assert [e.type for e in recovery] == ["trust.score.updated", "node.quarantine.lifted"]
    for event in recovery:
        fold.apply(event.type, T0 + 48 * HOUR_US, **event.payload)
    assert not fold.projection.snapshot["n1"].quarantined


def test_small_moves_are_not_published() -> None:
    fold = Fold()
    fold.success()
    fold.timeout()  # 0.5 -> 0.4 is a move of 0.1: published
    events = trust_events(fold.projection.snapshot)
    for event in events:
        fold.apply(event.type, T0, **event.payload)
    fold.success()  # 4/7 x 0.84 = 0.48: a move of 0.08 from 0.4 is published; below 0.05 is not
    fold.apply("trust.score.updated", T0, score=str(fold.projection.snapshot["n1"].score), previous="0.4")
    fold.health("healthy")
    assert trust_events(fold.projection.snapshot) == []
