"""Circuit breaker transitions, driven by explicit `now_ms` values (no sleeps)."""

from __future__ import annotations

import pytest

from krakod.scheduler import BreakerBoard, BreakerConfig, BreakerState, CircuitBreaker, Outcome, outcome_of

S, F, T = Outcome.SUCCESS, Outcome.FAILURE, Outcome.TIMEOUT


def feed(breaker: CircuitBreaker, outcomes: list[Outcome], *, start_ms: int = 0, step_ms: int = 100) -> list[object]:
    return [breaker.record(o, start_ms + i * step_ms) for i, o in enumerate(outcomes)]


def opened(breaker: CircuitBreaker, now_ms: int = 0) -> bool:
    return breaker.state(now_ms) is BreakerState.OPEN


@pytest.mark.parametrize(
    ("outcomes", "expected_open"),
    [
        pytest.param([F] * 19, False, id="failures below the minimum sample do not open it"),
        pytest.param([F] * 20, True, id="twenty failures in twenty attempts open it"),
        pytest.param([S, F] * 30, False, id="exactly half failing does not open it"),
        pytest.param([S, F] * 29 + [F, F], True, id="more than half of the last sixty failing opens it"),
        pytest.param([S] * 10 + [F] * 11, True, id="a burst of failures after a few successes opens it"),
        pytest.param([S] * 100 + [F] * 30, False, id="only the last sixty attempts count"),
        pytest.param([S] * 100 + [F] * 31, True, id="thirty-one failures in the last sixty open it"),
    ],
)
def test_the_failure_ratio_rule(outcomes: list[Outcome], expected_open: bool) -> None:
    breaker = CircuitBreaker()
    feed(breaker, outcomes, step_ms=10_000)  # slow enough that the timeout rule never applies
    assert opened(breaker, now_ms=len(outcomes) * 10_000 - 10_000) is expected_open


def test_twenty_timeouts_within_thirty_seconds_open_it() -> None:
    breaker = CircuitBreaker()
    feed(breaker, [S] * 40)
    changes = feed(breaker, [T] * 20, start_ms=10_000, step_ms=1_500)  # 19 gaps: 28.5 s
    assert changes[-1] is BreakerState.OPEN and changes[:-1] == [None] * 19


def test_twenty_timeouts_spread_over_more_than_thirty_seconds_do_not() -> None:
    breaker = CircuitBreaker()
    feed(breaker, [S] * 40)
    feed(breaker, [T] * 20, start_ms=10_000, step_ms=1_600)  # 19 gaps: 30.4 s
    assert breaker.state(50_000) is BreakerState.CLOSED


def test_open_then_half_open_with_one_probe_per_interval_then_closed() -> None:
    breaker = CircuitBreaker(config=BreakerConfig(min_attempts=1))
    assert breaker.record(F, 0) is BreakerState.OPEN
    assert not breaker.allows(4_999)
    assert breaker.state(5_000) is BreakerState.HALF_OPEN
    assert breaker.allows(5_000)
    breaker.dispatched(5_000)
    assert not breaker.allows(9_999)  # the probe of this interval is out
    assert breaker.allows(10_000)
    transitions = [breaker.record(S, 10_000 + i) for i in range(5)]
    assert transitions == [None, None, None, None, BreakerState.CLOSED]
    assert breaker.allows(10_010)


def test_a_failed_probe_opens_it_again() -> None:
    breaker = CircuitBreaker(config=BreakerConfig(min_attempts=1))
    breaker.record(F, 0)
    breaker.dispatched(6_000)
    assert breaker.record(S, 6_100) is None
    assert breaker.record(F, 6_200) is BreakerState.OPEN
    assert not breaker.allows(11_000)
    assert breaker.allows(11_200)


def test_results_arriving_while_open_change_nothing() -> None:
    breaker = CircuitBreaker(config=BreakerConfig(min_attempts=1))
    breaker.record(F, 0)
    assert breaker.record(S, 1_000) is None and breaker.record(F, 2_000) is None
    assert breaker.state(5_000) is BreakerState.HALF_OPEN  # the clock was not reset by the late failure


def test_a_closed_breaker_starts_with_a_fresh_window() -> None:
    breaker = CircuitBreaker(config=BreakerConfig(min_attempts=2))
    breaker.record(F, 0)
    breaker.record(F, 1)
    for i in range(5):
        breaker.record(S, 6_000 + i)
    assert breaker.state(6_010) is BreakerState.CLOSED
    assert breaker.record(F, 6_020) is None  # one failure of one attempt: below the minimum sample


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        pytest.param(None, Outcome.SUCCESS, id="no error is a success"),
        pytest.param("EXECUTION_ERROR", Outcome.FAILURE, id="a handler error is the node's failure"),
        pytest.param("TIMEOUT", Outcome.TIMEOUT, id="a run timeout is a timeout"),
        pytest.param("LEASE_EXPIRED", Outcome.TIMEOUT, id="an expired claim lease is a timeout"),
        pytest.param("VALIDATION_ERROR", None, id="a unit's bad input does not count against the node"),
        pytest.param("CANCELLED", None, id="a cancellation does not count"),
    ],
)
def test_which_results_count(code: str | None, expected: Outcome | None) -> None:
    assert outcome_of(code) is expected


def test_the_board_gates_nodes_independently() -> None:
    board = BreakerBoard(config=BreakerConfig(min_attempts=1))
    assert board.record("a", "RESOURCE_EXHAUSTED", 0) is BreakerState.OPEN
    assert board.record("b", "VALIDATION_ERROR", 0) is None
    assert not board.allows("a", 1_000) and board.allows("b", 1_000) and board.allows("unknown", 1_000)
    assert board.state("a", 5_000) is BreakerState.HALF_OPEN
    board.forget("a")
    assert board.allows("a", 5_000)
