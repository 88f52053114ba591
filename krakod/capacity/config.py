"""Thresholds of the capacity controller, with the defaults of issue 6, and the metrics it reads."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class CapacityConfig:
    """Every threshold of the controller. Depth ratios are fractions of `queue_max`.

    Validated on construction, so a bad configuration fails at daemon start.
    """

    window_s: float = 10.0
    # Staleness: a sample older than this (its `observed_at_s`) counts as missing.
    # None: one window length.
    stale_after_s: float | None = None

    replicas_min: int = 1
    replicas_max: int = 10
    replicas_initial: int | None = None  # None: replicas_min
    concurrency_per_replica: int = 4  # K: reported in scale events; the controller keeps it fixed

    queue_max: int = 1_000  # Q_max; pressure P = min(1, depth / queue_max)

    # Scale up when ANY signal is over its threshold for `scale_up_windows` windows in a row.
    scale_up_windows: int = 3
    scale_up_queue_depth: int = 200
    scale_up_wait_p95_s: float = 2.0
    scale_up_utilization: float = 0.80
    # Step size up: the worst signal's ratio to its threshold picks +1, +2 or +3.
    scale_up_ratio_for_step_2: float = 1.5
    scale_up_ratio_for_step_3: float = 2.0
    scale_up_step_max: int = 3

    # Scale down when ALL signals are under their thresholds for `scale_down_windows` windows.
    scale_down_windows: int = 6
    scale_down_queue_depth: int = 40
    scale_down_wait_p95_s: float = 1.0
    scale_down_utilization: float = 0.45
    # Step size down: -2 when every signal is under this fraction of its threshold, else -1.
    scale_down_fraction_for_step_2: float = 0.5
    scale_down_step_max: int = 2

    cooldown_after_scale_up_s: float = 60.0
    cooldown_after_scale_down_s: float = 180.0

    # P >= this forces the maximum step up at once (no streak needed; within replicas_max).
    pressure_force_ratio: float = 0.9

    # Admission: OPEN -> THROTTLED.
    throttle_depth_ratio: float = 0.9
    throttle_at_max_pressure_ratio: float = 0.9
    throttle_at_max_windows: int = 2
    # THROTTLED -> CRITICAL.
    critical_depth_ratio: float = 1.0
    critical_windows: int = 3
    # CRITICAL -> THROTTLED once the queue is back under the throttle line for a while.
    critical_relief_depth_ratio: float = 0.9
    critical_relief_windows: int = 3
    # THROTTLED or CRITICAL -> OPEN.
    open_depth_ratio: float = 0.5
    open_windows: int = 6

    recent_windows_kept: int = 60  # bounded history for GetCapacity

    def __post_init__(self) -> None:
        if self.window_s <= 0:
            raise ValueError(f"window_s must be > 0, got {self.window_s}")
        if not 1 <= self.replicas_min <= self.replicas_max:
            raise ValueError(f"need 1 <= replicas_min <= replicas_max, got {self.replicas_min}..{self.replicas_max}")
        if not self.replicas_min <= self.initial_replicas <= self.replicas_max:
            raise ValueError(f"replicas_initial {self.replicas_initial} is outside replicas_min..replicas_max")
        if self.queue_max <= 0 or self.concurrency_per_replica <= 0:
            raise ValueError("queue_max and concurrency_per_replica must be > 0")
        if not 1 <= self.scale_up_step_max <= 3 or not 1 <= self.scale_down_step_max <= 2:
            raise ValueError("steps are +1..+3 up and -1..-2 down")
        counts = (
            self.scale_up_windows,
            self.scale_down_windows,
            self.throttle_at_max_windows,
            self.critical_windows,
            self.critical_relief_windows,
            self.open_windows,
            self.recent_windows_kept,
        )
        if min(counts) < 1:
            raise ValueError("window counts must be >= 1")
        if self.cooldown_after_scale_up_s < 0 or self.cooldown_after_scale_down_s < 0:
            raise ValueError("cooldowns must be >= 0")
        if self.stale_after_s is not None and self.stale_after_s <= 0:
            raise ValueError("stale_after_s must be > 0")

    @property
    def initial_replicas(self) -> int:
        return self.replicas_min if self.replicas_initial is None else self.replicas_initial

    @property
    def staleness_s(self) -> float:
        return self.window_s if self.stale_after_s is None else self.stale_after_s


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricsSample:
    """One reading of the queue and the node registry, supplied by the daemon.

    queue_depth: units waiting for a node in this pool (submitted or deferred, not claimed).
    wait_p95_s: p95 of the time units waited in the queue, over roughly the last window.
    utilization: busy slots / total slots over connected healthy nodes, 0..1.
    fresh: False when the source knows its data is stale (no heartbeats, stale registry).
    observed_at_s: the clock time the data was last refreshed (e.g. the newest heartbeat);
    a sample older than `CapacityConfig.staleness_s` counts as stale. None: not checked.
    """

    queue_depth: int
    wait_p95_s: float
    utilization: float
    fresh: bool = True
    observed_at_s: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class WindowMetrics:
    """The input of one evaluation: the metrics of window `window` (an epoch-aligned index)."""

    window: int
    queue_depth: int = 0
    wait_p95_s: float = 0.0
    utilization: float = 0.0
    fresh: bool = True

    @classmethod
    def missing(cls, window: int) -> WindowMetrics:
        """No (usable) sample arrived in `window`."""
        return cls(window=window, fresh=False)

    @classmethod
    def of(cls, window: int, sample: MetricsSample | None, *, now_s: float, staleness_s: float) -> WindowMetrics:
        if sample is None or not sample.fresh:
            return cls.missing(window)
        if sample.observed_at_s is not None and now_s - sample.observed_at_s > staleness_s:
            return cls.missing(window)
        return cls(
            window=window,
            queue_depth=sample.queue_depth,
            wait_p95_s=sample.wait_p95_s,
            utilization=sample.utilization,
        )


__all__ = ["CapacityConfig", "MetricsSample", "WindowMetrics"]
