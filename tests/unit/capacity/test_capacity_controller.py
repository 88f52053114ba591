"""Synthetic metric trajectories in, exact sequences of modes and scale requests out."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from krakod.capacity import AdmissionMode, CapacityConfig, CapacityController, WindowMetrics
from krakod.capacity.state import MODE_CHANGED, SCALE_REQUESTED
from krakod.log.types import NewEvent

OPEN, THROTTLED, CRITICAL = AdmissionMode.OPEN, AdmissionMode.THROTTLED, AdmissionMode.CRITICAL

# (depth, W95 seconds, utilization), or None for a window without fresh metrics.
Point = tuple[int, float, float] | None
QUIET: Point = (30, 0.5, 0.3)  # idle, but not deeply idle (-1 steps)
DEEP_IDLE: Point = (5, 0.1, 0.1)  # under half of every scale-down threshold (-2 steps)
STEADY: Point = (100, 1.5, 0.6)  # neither overloaded nor idle
BUSY: Point = (250, 1.0, 0.5)  # depth over 200, ratio 1.25: +1


def controller(**overrides: object) -> CapacityController:
    return CapacityController(config=CapacityConfig(**overrides))  # type: ignore[arg-type]


def summary(event: NewEvent) -> tuple[object, ...]:
    p = event.payload
    if event.type == SCALE_REQUESTED:
        return ("scale", p["window"], p["from_replicas"], p["to_replicas"], p["rule"])
    assert event.type == MODE_CHANGED
    return ("mode", p["window"], p["from"], p["to"], p["rule"])


def metrics(window: int, point: Point) -> WindowMetrics:
    if point is None:
        return WindowMetrics.missing(window)
    depth, wait, utilization = point
    return WindowMetrics(window=window, queue_depth=depth, wait_p95_s=wait, utilization=utilization)


def drive(c: CapacityController, points: Sequence[Point], start: int = 0) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = []
    for offset, point in enumerate(points):
        out.extend(summary(e) for e in c.evaluate(metrics(start + offset, point)))
    return out


def test_three_overloaded_windows_scale_up_by_one() -> None:
    c = controller()
    assert drive(c, [BUSY, BUSY, BUSY]) == [("scale", 2, 1, 2, "sustained_overload")]
    assert c.replicas == 2 and c.mode is OPEN


def test_an_interrupted_streak_does_not_scale() -> None:
    assert drive(controller(), [BUSY, BUSY, STEADY, BUSY, BUSY, STEADY]) == []


def test_a_gap_between_windows_restarts_the_streak() -> None:
    c = controller()
    drive(c, [BUSY, BUSY])
    assert drive(c, [BUSY], start=3) == []
    assert drive(c, [BUSY, BUSY], start=4) == [("scale", 5, 1, 2, "sustained_overload")]


@pytest.mark.parametrize(
    ("point", "step"),
    [
        pytest.param((250, 0.0, 0.0), 1, id="depth 1.25x its threshold steps +1"),
        pytest.param((300, 0.0, 0.0), 2, id="depth 1.5x its threshold steps +2"),
        pytest.param((400, 0.0, 0.0), 3, id="depth 2x its threshold steps +3"),
        pytest.param((0, 3.0, 0.0), 2, id="W95 1.5x its threshold steps +2"),
        pytest.param((0, 5.0, 0.0), 3, id="W95 2.5x its threshold steps +3"),
        pytest.param((0, 0.0, 0.95), 1, id="utilization alone steps +1"),
        pytest.param((300, 5.0, 0.9), 3, id="the worst signal decides"),
    ],
)
def test_scale_up_step_follows_the_worst_signal(point: Point, step: int) -> None:
    events = drive(controller(), [point] * 3)
    assert events == [("scale", 2, 1, 1 + step, "sustained_overload")]


@pytest.mark.parametrize(
    ("point", "target"),
    [
        pytest.param(QUIET, 4, id="idle windows step -1"),
        pytest.param(DEEP_IDLE, 3, id="deeply idle windows step -2"),
    ],
)
def test_six_idle_windows_scale_down(point: Point, target: int) -> None:
    c = controller(replicas_initial=5)
    assert drive(c, [point] * 5) == []
    assert drive(c, [point], start=5) == [("scale", 5, 5, target, "sustained_idle")]


def test_steps_are_clamped_to_the_bounds() -> None:
    c = controller(replicas_max=3, replicas_initial=2)
    assert drive(c, [(400, 0.0, 0.0)] * 3) == [("scale", 2, 2, 3, "sustained_overload")]
    assert drive(c, [(400, 0.0, 0.0)] * 20, start=3) == []  # at R_max: nothing more
    low = controller(replicas_min=2, replicas_initial=3)
    assert drive(low, [DEEP_IDLE] * 6) == [("scale", 5, 3, 2, "sustained_idle")]
    assert drive(low, [DEEP_IDLE] * 40, start=6) == []


def test_scale_up_cooldown_is_sixty_seconds() -> None:
    # Ten-second windows: after scaling at window 2, the next is possible at window 8.
    events = drive(controller(), [BUSY] * 15)
    assert events == [
        ("scale", 2, 1, 2, "sustained_overload"),
        ("scale", 8, 2, 3, "sustained_overload"),
        ("scale", 14, 3, 4, "sustained_overload"),
    ]


def test_scale_down_cooldown_is_one_hundred_eighty_seconds() -> None:
    events = drive(controller(replicas_initial=10), [QUIET] * 42)
    assert events == [
        ("scale", 5, 10, 9, "sustained_idle"),
        ("scale", 23, 9, 8, "sustained_idle"),
        ("scale", 41, 8, 7, "sustained_idle"),
    ]


def test_cooldowns_follow_the_window_length() -> None:
    events = drive(controller(window_s=30.0), [BUSY] * 6)
    assert events == [("scale", 2, 1, 2, "sustained_overload"), ("scale", 5, 2, 3, "sustained_overload")]


def test_after_a_scale_down_only_pressure_overrides_the_cooldown() -> None:
    c = controller(replicas_initial=5)
    assert drive(c, [QUIET] * 6) == [("scale", 5, 5, 4, "sustained_idle")]
    assert drive(c, [BUSY] * 4, start=6) == []  # sustained overload waits for the cooldown
    assert drive(c, [(950, 3.0, 1.0)], start=10) == [
        ("mode", 10, "OPEN", "THROTTLED", "queue_depth_high"),
        ("scale", 10, 4, 7, "pressure_forced"),
    ]


def test_pressure_forces_plus_three_at_once_within_the_maximum() -> None:
    c = controller(replicas_max=3)
    assert drive(c, [(920, 0.0, 0.0)]) == [
        ("mode", 0, "OPEN", "THROTTLED", "queue_depth_high"),
        ("scale", 0, 1, 3, "pressure_forced"),
    ]


def test_sustained_critical_load_goes_throttled_then_critical_and_scales_to_the_maximum() -> None:
    flood = (1_200, 8.0, 1.0)
    events = drive(controller(), [flood] * 20)
    assert events == [
        ("mode", 0, "OPEN", "THROTTLED", "queue_depth_high"),
        ("scale", 0, 1, 4, "pressure_forced"),
        ("mode", 2, "THROTTLED", "CRITICAL", "queue_depth_critical"),
        ("scale", 6, 4, 7, "pressure_forced"),
        ("scale", 12, 7, 10, "pressure_forced"),
    ]


def test_recovery_from_critical_steps_through_throttled_to_open() -> None:
    c = controller()
    drive(c, [(1_200, 8.0, 1.0)] * 3)
    assert c.mode is CRITICAL
    events = drive(c, [(700, 2.0, 0.7), (450, 1.5, 0.6), (300, 1.5, 0.6)] + [STEADY] * 4, start=3)
    assert [e for e in events if e[0] == "mode"] == [
        ("mode", 5, "CRITICAL", "THROTTLED", "critical_relieved"),
        ("mode", 9, "THROTTLED", "OPEN", "recovered"),
    ]


def test_no_scale_down_while_critical() -> None:
    # Relief and recovery need many windows here, so CRITICAL outlasts a long idle stretch.
    c = controller(replicas_initial=6, critical_relief_windows=50, open_windows=50)
    drive(c, [(1_200, 8.0, 1.0)] * 3)
    assert c.mode is CRITICAL
    assert [e for e in drive(c, [DEEP_IDLE] * 30, start=20) if e[0] == "scale"] == []
    assert c.replicas == 9  # only the forced +3 of window 0


def test_at_maximum_replicas_two_windows_of_pressure_throttle() -> None:
    # The depth rule alone would wait for 95%; at R_max, 90% pressure for two windows is enough.
    c = controller(replicas_max=2, replicas_initial=2, throttle_depth_ratio=0.95)
    assert drive(c, [(920, 0.0, 0.0)] * 2) == [("mode", 1, "OPEN", "THROTTLED", "max_replicas_pressure")]


def test_oscillating_depth_around_the_throttle_line_does_not_flap() -> None:
    c = controller(replicas_max=1)
    events = drive(c, [(950, 1.0, 0.5), (850, 1.0, 0.5)] * 10)
    assert events == [("mode", 0, "OPEN", "THROTTLED", "queue_depth_high")]


def test_oscillating_depth_around_the_open_line_does_not_reopen() -> None:
    c = controller(replicas_max=1)
    drive(c, [(950, 1.0, 0.5)])
    assert drive(c, [(450, 1.0, 0.5), (550, 1.0, 0.5)] * 10, start=1) == []
    assert c.mode is THROTTLED


def test_alternating_busy_and_idle_windows_never_scale() -> None:
    assert drive(controller(replicas_initial=5), [BUSY, QUIET] * 30) == []


def test_telemetry_loss_freezes_replicas_and_throttles() -> None:
    c = controller()
    events = drive(c, [BUSY, BUSY, None, None, BUSY, BUSY, BUSY])
    assert events == [
        ("mode", 2, "OPEN", "THROTTLED", "metrics_stale"),
        ("scale", 6, 1, 2, "sustained_overload"),  # a fresh streak of three after metrics return
    ]


def test_telemetry_loss_never_scales_even_under_pressure_and_recovers_after_six_windows() -> None:
    c = controller(replicas_initial=4)
    assert drive(c, [None] * 10) == [("mode", 0, "OPEN", "THROTTLED", "metrics_stale")]
    assert c.replicas == 4
    assert drive(c, [STEADY] * 6, start=10) == [("mode", 15, "THROTTLED", "OPEN", "recovered")]


def test_telemetry_loss_keeps_critical() -> None:
    c = controller()
    drive(c, [(1_200, 8.0, 1.0)] * 3)
    assert drive(c, [None] * 3, start=3) == []
    assert c.mode is CRITICAL and c.replicas == 4


def test_re_evaluating_a_window_returns_nothing() -> None:
    c = controller()
    drive(c, [BUSY, BUSY, BUSY])
    state = c.state
    assert c.evaluate(metrics(2, BUSY)) == []
    assert c.evaluate(metrics(1, (2_000, 9.0, 1.0))) == []
    assert c.state == state


def test_events_carry_the_documented_payload_and_window_keys() -> None:
    c = CapacityController(pool="cpu")
    mode_event, scale_event = c.evaluate(WindowMetrics(window=7, queue_depth=950, wait_p95_s=3.25, utilization=0.9))
    assert mode_event.type == "capacity.admission.mode.changed"
    assert mode_event.idempotency_key == "capacity.mode:cpu:7"
    assert mode_event.payload == {
        "pool": "cpu",
        "from": "OPEN",
        "to": "THROTTLED",
        "rule": "queue_depth_high",
        "window": 7,
    }
    assert scale_event.type == "capacity.scale.requested"
    assert scale_event.idempotency_key == "capacity.scale:cpu:7"
    assert scale_event.payload == {
        "pool": "cpu",
        "from_replicas": 1,
        "to_replicas": 4,
        "concurrency_per_replica": 4,
        "rule": "pressure_forced",
        "metrics": {"queue_depth": 950, "wait_p95_s": 3.25, "utilization": 0.9},
        "window": 7,
    }
    assert scale_event.source == mode_event.source == "krakod:capacity"


def test_replicas_outside_new_bounds_are_brought_back_first() -> None:
    wide = controller(replicas_max=10)
    events = [e for i in range(0, 13, 6) for e in wide.evaluate(metrics(i, (1_200, 8.0, 1.0)))]
    assert wide.replicas == 10
    narrow = controller(replicas_max=5)
    narrow.restore(events)
    assert narrow.replicas == 10
    assert drive(narrow, [STEADY], start=20) == [("scale", 20, 10, 5, "replica_bounds")]


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"window_s": 0}, id="a zero window"),
        pytest.param({"replicas_min": 0}, id="no replicas at all"),
        pytest.param({"replicas_min": 5, "replicas_max": 4}, id="min above max"),
        pytest.param({"replicas_initial": 11}, id="initial above max"),
        pytest.param({"scale_up_step_max": 4}, id="a step of +4"),
        pytest.param({"scale_down_windows": 0}, id="an empty streak"),
    ],
)
def test_bad_configuration_fails_at_construction(overrides: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        CapacityConfig(**overrides)  # type: ignore[arg-type]
