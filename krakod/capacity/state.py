"""The capacity state that the log decides: a pure fold over capacity events.

Admission mode, replica count and the windows of the last scale actions are all
rebuilt from `capacity.scale.requested` and `capacity.admission.mode.changed` events,
so after a krakod restart they come from the log, not from memory. The fold reads
nothing but the events (no clock, no environment), as DESIGN.md §1 requires.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from krakod.capacity.admission import AdmissionMode, most_restrictive

SCALE_REQUESTED = "capacity.scale.requested"
MODE_CHANGED = "capacity.admission.mode.changed"
CAPACITY_EVENT_TYPES: tuple[str, ...] = (SCALE_REQUESTED, MODE_CHANGED)
DEFAULT_POOL = "default"


class CapacityEventLike(Protocol):
    """Both a committed `Event` and a `NewEvent` have these two attributes."""

    @property
    def type(self) -> str: ...

    @property
    def payload(self) -> Mapping[str, Any]: ...


def scale_key(pool: str, window: int) -> str:
    """Idempotency key of the (at most one) scale request of `pool` in `window`."""
    return f"capacity.scale:{pool}:{window}"


def mode_key(pool: str, window: int) -> str:
    """Idempotency key of the (at most one) admission mode change of `pool` in `window`."""
    return f"capacity.mode:{pool}:{window}"


@dataclass(frozen=True, slots=True, kw_only=True)
class CapacityState:
    """What the log says about one pool. Windows are epoch-aligned window indexes."""

    pool: str = DEFAULT_POOL
    mode: AdmissionMode = AdmissionMode.OPEN
    mode_rule: str | None = None  # the rule of the event that entered `mode`
    replicas: int
    last_scale_up_window: int | None = None
    last_scale_down_window: int | None = None
    last_event_window: int | None = None  # the newest window any capacity event was written for


def fold(state: CapacityState, event: CapacityEventLike) -> CapacityState:
    """Apply one event to `state`; events of other types or other pools leave it unchanged."""
    if event.type not in CAPACITY_EVENT_TYPES:
        return state
    payload = event.payload
    if payload.get("pool", DEFAULT_POOL) != state.pool:
        return state
    window = int(payload["window"])
    last = window if state.last_event_window is None else max(window, state.last_event_window)
    if event.type == MODE_CHANGED:
        return replace(state, mode=AdmissionMode(payload["to"]), mode_rule=str(payload["rule"]), last_event_window=last)
    before, after = int(payload["from_replicas"]), int(payload["to_replicas"])
    if after > before:
        return replace(state, replicas=after, last_scale_up_window=window, last_event_window=last)
    if after < before:
        return replace(state, replicas=after, last_scale_down_window=window, last_event_window=last)
    return replace(state, replicas=after, last_event_window=last)


def restore(initial: CapacityState, events: Iterable[CapacityEventLike]) -> CapacityState:
    """Fold `events` (in log order) onto `initial`."""
    state = initial
    for event in events:
        state = fold(state, event)
    return state


class CapacityView:
    """All pools' capacity state, fed with events in `seq` order (the daemon's projection).

    `default_replicas` is the replica count of a pool before its first scale event.
    """

    def __init__(self, *, default_replicas: int = 1) -> None:
        self._default_replicas = default_replicas
        self._pools: dict[str, CapacityState] = {}

    def apply(self, event: CapacityEventLike) -> None:
        if event.type not in CAPACITY_EVENT_TYPES:
            return
        pool = str(event.payload.get("pool", DEFAULT_POOL))
        state = self._pools.get(pool) or CapacityState(pool=pool, replicas=self._default_replicas)
        self._pools[pool] = fold(state, event)

    def state(self, pool: str = DEFAULT_POOL) -> CapacityState:
        return self._pools.get(pool) or CapacityState(pool=pool, replicas=self._default_replicas)

    def pools(self) -> list[str]:
        return sorted(self._pools)

    def mode(self) -> AdmissionMode:
        """The mode the gateway enforces: the most restrictive over all pools."""
        return most_restrictive(s.mode for s in self._pools.values())

    def mode_rule(self) -> str | None:
        """The rule that put the most restrictive pool in its mode (for rejection messages)."""
        mode = self.mode()
        for pool in sorted(self._pools):
            if self._pools[pool].mode is mode:
                return self._pools[pool].mode_rule
        return None


__all__ = [
    "CAPACITY_EVENT_TYPES",
    "DEFAULT_POOL",
    "MODE_CHANGED",
    "SCALE_REQUESTED",
    "CapacityState",
    "CapacityView",
    "fold",
    "mode_key",
    "restore",
    "scale_key",
]
