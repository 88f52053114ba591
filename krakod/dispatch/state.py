"""The dispatcher's state, shared by its parts, and the unit-table listener that keeps it current.

Everything here is soft state, rebuildable from the unit table and the agents' next hellos.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from krakod.config import Config
from krakod.log import Event, EventLog, NewEvent
from krakod.scheduler import (
    BreakerBoard,
    CongestionMonitor,
    NodeRegistry,
    PlacementConfig,
    RetryFacts,
    RetryPolicy,
    Scheduler,
    TrustView,
)
from krakod.units import (
    HELD,
    PENDING,
    PRIORITIES,
    SCHEDULED,
    Unit,
    UnitTable,
)

log = logging.getLogger(__name__)
RELEASING = frozenset(
    {
        "workunit.failed",
        "workunit.claim.expired",
        "workunit.requeued",
        "workunit.completed",
        "workunit.cancelled",
        "workunit.rejected",
        "workunit.retry.dropped",
    }
)
DEFAULT_TRUST = TrustView()
RESCAN_MS = 1000  # how soon parked units (nothing fit them) are examined again


def now_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class AgentLink(Protocol):
    """What the dispatcher needs of a connected agent's session."""

    connection_id: str

    def send(self, item: Any) -> bool: ...

    def close(self, reason: str) -> None: ...


class DispatcherState:
    def __init__(
        self,
        *,
        config: Config,
        log: EventLog,
        units: UnitTable,
        placement: PlacementConfig | None = None,
        max_pass_units: int = 2000,
        max_blocked_per_pass: int = 256,
        max_timer_batch: int = 5000,
    ) -> None:
        self.config = config
        self.log = log
        self.units = units
        self.registry = NodeRegistry()
        self.scheduler = Scheduler(registry=self.registry, config=placement or PlacementConfig())
        self.breakers = BreakerBoard()
        self.congestion = CongestionMonitor()
        self.retry = RetryPolicy(congestion=self.congestion)
        self.trust: Callable[[], TrustView] = lambda: DEFAULT_TRUST  # the trust projection plugs in here
        self.queue_wait_p95_ms: Callable[[], int] = lambda: 0  # capacity metrics plug in here
        # LLM budgets plug in here: the reservation events (and guards) due before a unit is scheduled,
        # and what to do with a unit whose reservation the log refused.
        self.reserve: Callable[[Unit], tuple[list[NewEvent], list[Any]]] = lambda unit: ([], [])
        self.on_reservation_refused: Callable[[Unit, Any, str], Awaitable[None]] | None = None
        self.links: dict[str, AgentLink] = {}
        self.max_pass_units = max_pass_units
        self.max_blocked_per_pass = max_blocked_per_pass
        self.max_timer_batch = max_timer_batch
        self._ready: dict[str, list[tuple[int, int, str, int]]] = {}  # kind -> heap of (prio, seq, unit, attempt)
        # Units that became pending and were neither placed nor deferred yet, per kind: when no node of the
        # kind is connected, the pass logs their deferral from here instead of scanning the ready heap.
        self._unplaced: dict[str, deque[tuple[str, int]]] = {}
        self._holders: dict[str, set[str]] = {}  # unit -> nodes holding a slot for it (offers and the claim)
        # Units the pipeline examined and could not place (a breaker open, a constraint no free node meets):
        # parked per kind so they never block the units behind them, and retried on a rescan — when a node
        # joins, or RESCAN_MS after they were parked (a breaker's probe time, a lapsed exclusion).
        self._parked: dict[str, list[tuple[int, int, str, int]]] = {}
        self._rescan_now = False
        self._rescan_armed = False
        self._waiting_on: dict[str, list[str]] = {}  # dependency -> units waiting for it to finish
        self.drained: set[str] = set()  # a fold of node.drain.requested / node.drain.lifted
        self._timers: list[tuple[int, int, str, str, int, int]] = []  # (due_ms, n, kind, unit, attempt, round)
        self._counter = itertools.count()
        self._leases: dict[str, tuple[str, int, int]] = {}  # unit -> (node, attempt, expires_ms)
        self._excluded: dict[str, set[str]] = {}  # unit -> nodes that let an offer lapse this attempt
        self._pending_since: dict[str, int] = {}  # unit -> when it last became ready to place
        self.on_queue_wait: Callable[[int], None] | None = None  # each unit's pending->claimed wait
        self._wake_scheduler = asyncio.Event()
        self._wake_timers = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[Any]] = set()
        units.add_listener(self._on_unit_event)

    def _on_unit_event(self, unit: Unit, event: Event) -> None:
        t = event.type
        if unit.terminal and unit.work_unit_id in self._waiting_on:
            for waiter_id in self._waiting_on.pop(unit.work_unit_id):
                waiter = self.units.get(waiter_id)
                if waiter is not None and waiter.state == PENDING:
                    self._push_ready(waiter)  # its dependency finished: decide again
        if t in RELEASING:
            self._release_all(unit.work_unit_id)
            if t != "workunit.requeued":
                self._leases.pop(unit.work_unit_id, None)
            if unit.terminal:
                self._excluded.pop(unit.work_unit_id, None)
                self._pending_since.pop(unit.work_unit_id, None)
            self._wake_scheduler.set()
        if t == "workunit.submitted" or t == "workunit.requeued":
            self._push_ready(unit)
        elif t == "workunit.retry.scheduled":
            self._excluded.pop(unit.work_unit_id, None)
            self._add_timer(now_ms() + unit.retry_delay_ms, "retry", unit, 0)
        elif t == "workunit.claimed":
            since = self._pending_since.pop(unit.work_unit_id, None)
            if since is not None and self.on_queue_wait is not None:
                self.on_queue_wait(now_ms() - since)
            holder = unit.node_id or ""
            for node_id in unit.offered_to:
                if node_id != holder:
                    self._unassign(node_id, unit.work_unit_id)
            self._wake_scheduler.set()

    def _push_ready(self, unit: Unit) -> None:
        priority = PRIORITIES.index(unit.priority) if unit.priority in PRIORITIES else 2
        heapq.heappush(
            self._ready.setdefault(unit.kind, []), (priority, unit.submitted_seq, unit.work_unit_id, unit.attempt)
        )
        self._pending_since.setdefault(unit.work_unit_id, now_ms())
        self._unplaced.setdefault(unit.kind, deque()).append((unit.work_unit_id, unit.attempt))
        self._wake_scheduler.set()

    def _assign(self, node_id: str, work_unit_id: str) -> None:
        holders = self._holders.setdefault(work_unit_id, set())
        if node_id not in holders and node_id in self.registry:
            holders.add(node_id)
            self.registry.reserve_slot(node_id)

    def _unassign(self, node_id: str, work_unit_id: str) -> None:
        holders = self._holders.get(work_unit_id)
        if holders is not None and node_id in holders:
            holders.discard(node_id)
            self.registry.release_slot(node_id)
            if not holders:
                del self._holders[work_unit_id]

    def _release_all(self, work_unit_id: str) -> None:
        for node_id in self._holders.pop(work_unit_id, ()):
            self.registry.release_slot(node_id)

    def _add_timer(self, due_ms: int, kind: str, unit: Unit, round_: int) -> None:
        heapq.heappush(self._timers, (due_ms, next(self._counter), kind, unit.work_unit_id, unit.attempt, round_))
        self._wake_timers.set()

    def _spawn_append(self, events: list[NewEvent]) -> None:
        """Append without waiting (telemetry such as health samples); the task is kept until it ends."""
        task = asyncio.create_task(self.log.append_many(events))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def recover(self) -> None:
        """After replaying the log: give held claims a fresh lease and re-place offered units."""
        now = now_ms()
        lease_ms = self.config.timing.lease_ms
        for unit in self.units:
            if unit.state in HELD and unit.node_id is not None:
                self._leases[unit.work_unit_id] = (unit.node_id, unit.attempt, now + lease_ms)
                self._add_timer(now + lease_ms, "lease", unit, 0)
            elif unit.state == SCHEDULED:
                self._add_timer(now, "dispatch", unit, unit.round)

    def _facts(self, unit: Unit, attempt: int, *, idempotent: bool | None = None) -> RetryFacts:
        return RetryFacts(
            work_unit_id=unit.work_unit_id,
            tenant_id=unit.tenant_id,
            attempt=attempt,
            idempotent=bool(unit.spec.get("idempotent")) if idempotent is None else idempotent,
            priority=unit.priority if unit.priority in PRIORITIES else "p2",
            max_attempts=int(unit.spec.get("max_attempts") or 0),
        )

    def congestion_mode(self) -> str:
        return str(self.congestion.mode.value)

    def queue_depth(self) -> int:
        return self.units.counts.get(PENDING, 0)

    def stability_class(self, node_id: str) -> str:
        node = self.registry.get(node_id)
        return node.hello.stability_class if node is not None else "community"
