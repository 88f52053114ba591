"""The capacity state after a restart comes from the log's capacity events."""

from __future__ import annotations

from krakod.capacity import AdmissionMode, CapacityController, CapacityView, WindowMetrics
from krakod.capacity.state import CapacityState, fold
from krakod.log.types import NewEvent


def evaluate_all(c: CapacityController, depths: list[int], start: int = 0) -> list[NewEvent]:
    events: list[NewEvent] = []
    for offset, depth in enumerate(depths):
        metrics = WindowMetrics(window=start + offset, queue_depth=depth, wait_p95_s=depth / 250, utilization=0.9)
        events.extend(c.evaluate(metrics))
    return events


def test_restore_rebuilds_mode_replicas_and_cooldowns() -> None:
    live = CapacityController()
    events = evaluate_all(live, [1_200] * 4)
    restarted = CapacityController()
    restarted.restore(e.to_event(seq, ts_us=0) for seq, e in enumerate(events, start=1))
    assert (
        restarted.state
        == live.state
        == CapacityState(
            mode=AdmissionMode.CRITICAL,
            mode_rule="queue_depth_critical",
            replicas=4,
            last_scale_up_window=0,
            last_event_window=2,
        )
    )


def test_a_restarted_controller_does_not_repeat_logged_decisions() -> None:
    live = CapacityController()
    events = evaluate_all(live, [1_200] * 3)
    restarted = CapacityController()
    restarted.restore(events)
    # Windows 0..2 are decided in the log; re-evaluating them appends nothing.
    assert evaluate_all(restarted, [1_200] * 3) == []
    # The cooldown of window 0's scale-up still holds after the restart: next +3 at window 6.
    later = evaluate_all(restarted, [1_200] * 4, start=3)
    assert [(e.payload["window"], e.payload["to_replicas"]) for e in later] == [(6, 7)]


def test_the_fold_ignores_other_pools_and_other_event_types() -> None:
    state = CapacityState(pool="cpu", replicas=2)
    other_pool = CapacityController(pool="llm_pod").evaluate(WindowMetrics(window=0, queue_depth=2_000))
    unrelated = NewEvent(type="workunit.submitted", payload={"window": 3})
    for event in [*other_pool, unrelated]:
        assert fold(state, event) == state


def test_the_view_enforces_the_most_restrictive_pool() -> None:
    view = CapacityView()
    for event in evaluate_all(CapacityController(pool="cpu"), [1_200] * 3):
        view.apply(event)
    for event in CapacityController(pool="llm_pod").evaluate(WindowMetrics(window=0, queue_depth=10)):
        view.apply(event)
    assert view.state("cpu").mode is AdmissionMode.CRITICAL
    assert view.state("llm_pod").mode is AdmissionMode.OPEN
    assert view.mode() is AdmissionMode.CRITICAL
    assert view.mode_rule() == "queue_depth_critical"
