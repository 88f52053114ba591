"""Simulated pressure profiles drive the controller through the modes the demo shows."""

from __future__ import annotations

import pytest

from krakod.capacity import CapacityController, SimulatedPressure, WindowMetrics
from krakod.capacity.simulate import AUTO_PERIOD


def timeline(profile: str, windows: int) -> list[tuple[str, int]]:
    source = SimulatedPressure(profile=profile)
    c = CapacityController()
    out = []
    for window in range(windows):
        c.evaluate(WindowMetrics.of(window, source(), now_s=0.0, staleness_s=10.0))
        out.append((c.mode.value, c.replicas))
    return out


def modes(points: list[tuple[str, int]]) -> list[str]:
    """The sequence of distinct modes, in order."""
    seen: list[str] = []
    for mode, _ in points:
        if not seen or seen[-1] != mode:
            seen.append(mode)
    return seen


def test_auto_rises_into_critical_and_recovers() -> None:
    points = timeline("auto", AUTO_PERIOD)
    assert modes(points) == ["OPEN", "THROTTLED", "CRITICAL", "THROTTLED", "OPEN"]
    replicas = [r for _, r in points]
    assert max(replicas) > 1
    assert replicas[-1] < max(replicas)  # scaled down again once quiet


@pytest.mark.parametrize(
    ("profile", "expected_modes", "replicas_after_10"),
    [
        pytest.param("none", ["OPEN"], 1, id="none stays quiet"),
        pytest.param("low", ["OPEN"], 3, id="low scales up one at a time"),
        pytest.param("high", ["OPEN"], 7, id="high scales up three at a time"),
        pytest.param("critical", ["THROTTLED", "CRITICAL"], 7, id="critical throttles at once"),
    ],
)
def test_flat_profiles(profile: str, expected_modes: list[str], replicas_after_10: int) -> None:
    points = timeline(profile, 10)
    assert modes(points) == expected_modes
    assert points[-1][1] == replicas_after_10


def test_the_same_profile_gives_the_same_trajectory() -> None:
    assert timeline("auto", 40) == timeline("auto", 40)


def test_unknown_profile_is_rejected_at_construction() -> None:
    with pytest.raises(ValueError, match="unknown pressure profile"):
        SimulatedPressure(profile="extreme")
