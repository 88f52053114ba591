"""The logical autoscaling controller: fixed windows of metrics in, capacity events out.

Each window (epoch-aligned, `CapacityConfig.window_s` long) is evaluated once:

1. Stale or missing metrics freeze R (no scale request) and move OPEN to THROTTLED.
2. Otherwise streaks of consecutive windows are updated and at most one admission mode
   transition happens (one step per window; see `_next_mode`).
3. Then at most one scale request (see `_scale_step`), evaluated against the new mode.

Step sizes. Up: r = the worst ratio of a signal to its threshold in the deciding window
(depth/200, W95/2.0 s, utilization/0.80): r < 1.5 gives +1, r < 2.0 gives +2, otherwise
+3. Pressure P >= 0.9 forces +3 at once, without waiting for a streak and ignoring the
scale-down cooldown (but not the scale-up cooldown: fresh replicas get time to help,
admission control carries the overload meanwhile). Down: -2 when every signal is under
half its scale-down threshold, else -1. Steps are clamped to [R_min, R_max]. A cooldown
blocks any scale request in either direction: 60 s after an increase, 180 s after a
decrease. Streaks restart from zero after each scale request, after a gap in the
windows, after a stale window and after a restart (they are not in the log; R, the
mode and the cooldown windows are).

Idempotency keys are `capacity.scale:{pool}:{window}` and `capacity.mode:{pool}:{window}`,
so re-evaluating a window (after a restart, say) never appends twice.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from krakod.capacity.admission import AdmissionMode
from krakod.capacity.config import CapacityConfig, MetricsSample, WindowMetrics
from krakod.capacity.state import (
    DEFAULT_POOL,
    MODE_CHANGED,
    SCALE_REQUESTED,
    CapacityEventLike,
    CapacityState,
    fold,
    mode_key,
    scale_key,
)
from krakod.log.types import NewEvent

logger = logging.getLogger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[object]]
MetricsSource = Callable[[], MetricsSample | Awaitable[MetricsSample | None] | None]
Append = Callable[[NewEvent], Awaitable[object]]
SOURCE = "krakod:capacity"
_EPSILON = 1e-9  # keeps a clock sitting on a window boundary from rounding into the previous window


class ScaleActuator(Protocol):
    async def apply(self, target_replicas: int) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class WindowRecord:
    """One evaluated window, for the operator's view (GetCapacity `recent`)."""

    window: int
    mode: AdmissionMode
    replicas: int
    queue_depth: int
    wait_p95_s: float
    utilization: float
    fresh: bool


@dataclass(slots=True)
class _Streaks:
    """Consecutive-window counters (memory only; they restart at zero)."""

    overload: int = 0
    idle: int = 0
    critical: int = 0
    relief: int = 0
    healthy: int = 0
    at_max_pressure: int = 0


class CapacityController:
    """Evaluates windows for one pool. Not thread-safe; one task drives it."""

    def __init__(
        self,
        *,
        pool: str = DEFAULT_POOL,
        config: CapacityConfig | None = None,
        clock: Clock = time.time,
    ) -> None:
        self.pool = pool
        self.config = config or CapacityConfig()
        self._clock = clock
        self._state = self.initial_state()
        self._streaks = _Streaks()
        self._last_evaluated: int | None = None
        self._recent: deque[WindowRecord] = deque(maxlen=self.config.recent_windows_kept)

    # -- state ----------------------------------------------------------------

    def initial_state(self) -> CapacityState:
        return CapacityState(pool=self.pool, replicas=self.config.initial_replicas)

    @property
    def state(self) -> CapacityState:
        return self._state

    @property
    def mode(self) -> AdmissionMode:
        return self._state.mode

    @property
    def replicas(self) -> int:
        return self._state.replicas

    def recent(self) -> list[WindowRecord]:
        return list(self._recent)

    def fold(self, event: CapacityEventLike) -> None:
        """Apply one logged capacity event (other types and pools are ignored)."""
        self._state = fold(self._state, event)

    def restore(self, events: Iterable[CapacityEventLike]) -> None:
        """Rebuild the state from the log's events (in seq order); streaks restart at zero."""
        self._state = self.initial_state()
        for event in events:
            self.fold(event)
        self._streaks = _Streaks()
        self._last_evaluated = None

    def window_index(self, now_s: float) -> int:
        return math.floor(now_s / self.config.window_s + _EPSILON)

    # -- the pure step ----------------------------------------------------------

    def evaluate(self, metrics: WindowMetrics) -> list[NewEvent]:
        """Evaluate one finished window; returns the events to append (already folded in).

        A window at or before the newest one evaluated (or logged) returns [] and changes nothing.
        """
        window = metrics.window
        newest = max((w for w in (self._last_evaluated, self._state.last_event_window) if w is not None), default=None)
        if newest is not None and window <= newest:
            return []
        if self._last_evaluated is None or window != self._last_evaluated + 1:
            self._streaks = _Streaks()
        self._last_evaluated = window
        events: list[NewEvent] = []
        if not metrics.fresh:
            # Telemetry loss: freeze R, and admit only urgent work until metrics return.
            self._streaks = _Streaks()
            if self._state.mode is AdmissionMode.OPEN:
                events.append(self._mode_event(window, AdmissionMode.THROTTLED, "metrics_stale"))
        else:
            self._update_streaks(metrics)
            transition = self._next_mode(metrics)
            if transition is not None:
                events.append(self._mode_event(window, *transition))
            scale = self._scale_step(metrics)
            if scale is not None:
                events.append(self._scale_event(metrics, *scale))
                self._streaks.overload = self._streaks.idle = 0
        self._recent.append(
            WindowRecord(
                window=window,
                mode=self._state.mode,
                replicas=self._state.replicas,
                queue_depth=metrics.queue_depth,
                wait_p95_s=metrics.wait_p95_s,
                utilization=metrics.utilization,
                fresh=metrics.fresh,
            )
        )
        return events

    def _update_streaks(self, m: WindowMetrics) -> None:
        c, s = self.config, self._streaks
        pressure = self._pressure(m)
        overloaded = (
            m.queue_depth > c.scale_up_queue_depth
            or m.wait_p95_s > c.scale_up_wait_p95_s
            or m.utilization > c.scale_up_utilization
        )
        s.overload = s.overload + 1 if overloaded else 0
        s.idle = s.idle + 1 if self._is_idle(m, 1.0) else 0
        s.critical = s.critical + 1 if m.queue_depth >= c.critical_depth_ratio * c.queue_max else 0
        s.relief = s.relief + 1 if m.queue_depth < c.critical_relief_depth_ratio * c.queue_max else 0
        s.healthy = s.healthy + 1 if m.queue_depth < c.open_depth_ratio * c.queue_max else 0
        at_max = self._state.replicas >= c.replicas_max and pressure >= c.throttle_at_max_pressure_ratio
        s.at_max_pressure = s.at_max_pressure + 1 if at_max else 0

    def _is_idle(self, m: WindowMetrics, fraction: float) -> bool:
        c = self.config
        return (
            m.queue_depth < c.scale_down_queue_depth * fraction
            and m.wait_p95_s < c.scale_down_wait_p95_s * fraction
            and m.utilization < c.scale_down_utilization * fraction
        )

    def _pressure(self, m: WindowMetrics) -> float:
        return min(1.0, m.queue_depth / self.config.queue_max)

    def _next_mode(self, m: WindowMetrics) -> tuple[AdmissionMode, str] | None:
        """At most one transition per window; each rule needs its streak, so modes do not flap."""
        c, s, mode = self.config, self._streaks, self._state.mode
        if mode is AdmissionMode.OPEN:
            if m.queue_depth >= c.throttle_depth_ratio * c.queue_max:
                return AdmissionMode.THROTTLED, "queue_depth_high"
            if s.at_max_pressure >= c.throttle_at_max_windows:
                return AdmissionMode.THROTTLED, "max_replicas_pressure"
            return None
        if s.healthy >= c.open_windows:
            return AdmissionMode.OPEN, "recovered"
        if mode is AdmissionMode.THROTTLED and s.critical >= c.critical_windows:
            return AdmissionMode.CRITICAL, "queue_depth_critical"
        if mode is AdmissionMode.CRITICAL and s.relief >= c.critical_relief_windows:
            return AdmissionMode.THROTTLED, "critical_relieved"
        return None

    def _scale_step(self, m: WindowMetrics) -> tuple[int, str] | None:
        """(target replicas, rule) or None. See the module docstring for the rules."""
        c, s, r = self.config, self._streaks, self._state.replicas
        if r > c.replicas_max or r < c.replicas_min:  # the bounds changed since the log was written
            return min(max(r, c.replicas_min), c.replicas_max), "replica_bounds"
        window = m.window
        up_cooling = self._cooling(window, self._state.last_scale_up_window, c.cooldown_after_scale_up_s)
        down_cooling = self._cooling(window, self._state.last_scale_down_window, c.cooldown_after_scale_down_s)
        if self._pressure(m) >= c.pressure_force_ratio and not up_cooling:
            target = min(c.replicas_max, r + c.scale_up_step_max)
            return (target, "pressure_forced") if target != r else None
        if up_cooling or down_cooling:
            return None
        if s.overload >= c.scale_up_windows:
            target = min(c.replicas_max, r + self._step_up(m))
            return (target, "sustained_overload") if target != r else None
        if s.idle >= c.scale_down_windows and self._state.mode is not AdmissionMode.CRITICAL:
            step = 2 if self._is_idle(m, c.scale_down_fraction_for_step_2) else 1
            target = max(c.replicas_min, r - min(step, c.scale_down_step_max))
            return (target, "sustained_idle") if target != r else None
        return None

    def _step_up(self, m: WindowMetrics) -> int:
        c = self.config
        ratio = max(
            m.queue_depth / c.scale_up_queue_depth,
            m.wait_p95_s / c.scale_up_wait_p95_s,
            m.utilization / c.scale_up_utilization,
        )
        step = 3 if ratio >= c.scale_up_ratio_for_step_3 else 2 if ratio >= c.scale_up_ratio_for_step_2 else 1
        return min(step, c.scale_up_step_max)

    def _cooling(self, window: int, since_window: int | None, cooldown_s: float) -> bool:
        return since_window is not None and (window - since_window) * self.config.window_s < cooldown_s

    def _mode_event(self, window: int, to: AdmissionMode, rule: str) -> NewEvent:
        payload = {"pool": self.pool, "from": self._state.mode.value, "to": to.value, "rule": rule, "window": window}
        event = NewEvent(type=MODE_CHANGED, payload=payload, idempotency_key=mode_key(self.pool, window), source=SOURCE)
        self.fold(event)
        return event

    def _scale_event(self, m: WindowMetrics, target: int, rule: str) -> NewEvent:
        payload = {
            "pool": self.pool,
            "from_replicas": self._state.replicas,
            "to_replicas": target,
            "concurrency_per_replica": self.config.concurrency_per_replica,
            "rule": rule,
            "metrics": {
                "queue_depth": m.queue_depth,
                "wait_p95_s": round(m.wait_p95_s, 3),
                "utilization": round(m.utilization, 4),
            },
            "window": m.window,
        }
        event = NewEvent(
            type=SCALE_REQUESTED, payload=payload, idempotency_key=scale_key(self.pool, m.window), source=SOURCE
        )
        self.fold(event)
        return event

    # -- the task ---------------------------------------------------------------

    async def run(
        self,
        metrics_source: MetricsSource,
        append: Append,
        *,
        clock: Clock | None = None,
        sleep: Sleep = asyncio.sleep,
        actuator: ScaleActuator | None = None,
        max_windows: int | None = None,
    ) -> None:
        """Evaluate every window as it ends, until cancelled (or after `max_windows`).

        At each window's end: read `metrics_source()` (sync or async; None or an exception
        means no sample), evaluate, `await append(event)` for each event in order (log
        first), then `await actuator.apply(R)` if R changed. `append` errors propagate
        (the log is the truth: no decision is acted on unless it is logged); actuator
        errors are logged. At start the actuator is reconciled to the restored R.

        The clock must be wall-clock seconds since the epoch (the default, `time.time`):
        window indexes, and so idempotency keys, must mean the same after a restart.
        """
        now_clock = clock or self._clock
        if actuator is not None:
            await self._actuate(actuator, self._state.replicas)
        target = self.window_index(now_clock())
        evaluated = 0
        while max_windows is None or evaluated < max_windows:
            now = now_clock()
            if (target + 1) * self.config.window_s - now > self.config.window_s:
                target = self.window_index(now)  # the clock stepped back: never sleep past one window
            end_s = (target + 1) * self.config.window_s
            if end_s > now:
                await sleep(end_s - now)
            sample = await self._read(metrics_source)
            before = self._state.replicas
            metrics = WindowMetrics.of(target, sample, now_s=now_clock(), staleness_s=self.config.staleness_s)
            for event in self.evaluate(metrics):
                await append(event)
            if actuator is not None and self._state.replicas != before:
                await self._actuate(actuator, self._state.replicas)
            evaluated += 1
            # If we fell behind (a blocked loop), skip to the window in progress; the gap resets streaks.
            target = max(target + 1, self.window_index(now_clock()))

    async def _read(self, source: MetricsSource) -> MetricsSample | None:
        try:
            result = source()
            if inspect.isawaitable(result):
                result = await result
        except Exception:
            logger.exception("capacity pool %s: reading metrics failed; treating the window as stale", self.pool)
            return None
        return result

    async def _actuate(self, actuator: ScaleActuator, replicas: int) -> None:
        try:
            await actuator.apply(replicas)
        except Exception:
            logger.exception("capacity pool %s: actuator failed to apply %d replicas", self.pool, replicas)


__all__ = ["SOURCE", "CapacityController", "Clock", "MetricsSource", "ScaleActuator", "Sleep", "WindowRecord"]
