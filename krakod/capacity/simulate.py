"""Simulated pressure for the demo: `--simulate-pressure none|low|high|critical|auto`.

Each profile is a fixed trajectory of queue depth per window (open loop: it does not
react to R), from which W95 and utilization follow by fixed formulas, so a demo run is
deterministic and shows the controller's reactions window by window:

- none: a quiet queue (20 deep); nothing changes (R stays at R_min).
- low: mild overload (250 deep, W95 1.0 s): +1 after 3 windows, then +1 per cooldown; stays OPEN.
- high: heavy overload (700 deep, W95 2.8 s): +3 after 3 windows; stays OPEN.
- critical: beyond Q_max (1,500 deep): +3 at once, THROTTLED at once, CRITICAL after 3 windows.
- auto: quiet, rising, critical, draining, quiet again (then repeats every `AUTO_PERIOD`
  windows): OPEN -> THROTTLED -> CRITICAL -> THROTTLED -> OPEN, with scale ups and,
  after the cooldowns, scale downs.
"""

from __future__ import annotations

from krakod.capacity.config import MetricsSample

PROFILES: tuple[str, ...] = ("none", "low", "high", "critical", "auto")

_FLAT_DEPTHS = {"none": 20, "low": 250, "high": 700, "critical": 1_500}
# quiet (3) | rising (4) | critical (4) | draining (8) | quiet (11)
_AUTO_DEPTHS: tuple[int, ...] = (
    (20, 20, 20)
    + (300, 500, 750, 950)
    + (1_100, 1_250, 1_300, 1_200)
    + (950, 700, 450, 300, 150, 60, 30, 20)
    + (20,) * 11
)
AUTO_PERIOD = len(_AUTO_DEPTHS)


def depth_at(profile: str, window: int) -> int:
    """The simulated queue depth of the `window`-th window (0-based) of `profile`."""
    if profile == "auto":
        return _AUTO_DEPTHS[window % AUTO_PERIOD]
    if profile not in _FLAT_DEPTHS:
        raise ValueError(f"unknown pressure profile {profile!r}: expected one of {', '.join(PROFILES)}")
    return _FLAT_DEPTHS[profile]


def sample_for_depth(depth: int) -> MetricsSample:
    """W95 grows linearly with the backlog (250 units per second of wait); utilization saturates."""
    return MetricsSample(
        queue_depth=depth,
        wait_p95_s=round(depth / 250, 3),
        utilization=round(min(1.0, 0.25 + depth * 0.0008), 4),
    )


class SimulatedPressure:
    """A metrics source for `CapacityController.run`: the k-th call returns window k's sample."""

    def __init__(self, *, profile: str) -> None:
        if profile not in PROFILES:
            raise ValueError(f"unknown pressure profile {profile!r}: expected one of {', '.join(PROFILES)}")
        self.profile = profile
        self._window = 0

    def sample_at(self, window: int) -> MetricsSample:
        return sample_for_depth(depth_at(self.profile, window))

    def __call__(self) -> MetricsSample:
        sample = self.sample_at(self._window)
        self._window += 1
        return sample


__all__ = ["AUTO_PERIOD", "PROFILES", "SimulatedPressure", "depth_at", "sample_for_depth"]
