"""Dispatch: from pending units to offers, claims, results, leases and retries.

Decisions become events through the log writer with guards (krakod.units), so
races between agents, timers and clients are settled by the log itself. The
dispatcher keeps only soft state: per-kind queues of ready units, timers, the
live node registry (krakod.scheduler) and which node holds which unit — all
rebuildable from the unit table and the agents' next hellos.

Bounds: a scheduling pass places at most `max_pass_units` units and skips at
most `max_blocked_per_pass` that fit nowhere before yielding; one timer heap; a
timer pass fires at most `max_timer_batch` timers; per-node messages leave
through the agent session's bounded queue.

Queueing for capacity is not an event: when every node of a kind is busy, units
wait in the ready queue (visible as queue depth and queue wait). A unit the
placement pipeline examined and could not place — or one submitted when no node
of its kind is connected at all — gets one `workunit.scheduling.deferred` per
attempt, with the reasons.
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

from krako.v1 import agent_pb2

from krakod import outcomes
from krakod.config import Config
from krakod.log import Event, EventLog, NewEvent
from krakod.scheduler import (
    AttemptError,
    BreakerBoard,
    CongestionMonitor,
    CongestionSignals,
    Deferral,
    Measurements,
    NodeHello,
    NodeRegistry,
    PlacementConfig,
    PlacementRequest,
    RetryFacts,
    RetryPolicy,
    Scheduler,
    TrustView,
)
from krakod.units import (
    CLAIMED,
    HELD,
    PENDING,
    PRIORITIES,
    SCHEDULED,
    Unit,
    UnitTable,
    guard_all,
    guard_claim,
    guard_holder,
    guard_not_terminal,
    guard_pair,
    guard_schedule,
    guard_state,
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


class Dispatcher:
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

    # -- unit table listener (runs as the writer stages each event) --------------

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

    # -- lifecycle ---------------------------------------------------------------

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

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._schedule_loop(), name="krako-scheduler"),
            asyncio.create_task(self._timer_loop(), name="krako-timers"),
            asyncio.create_task(self._tick_loop(), name="krako-node-ttl"),
        ]

    async def stop(self) -> None:
        for task in (*self._tasks, *self._background):
            task.cancel()
        await asyncio.gather(*self._tasks, *self._background, return_exceptions=True)
        self._tasks = []

    # -- nodes ---------------------------------------------------------------------

    def node_joined(self, hello: NodeHello, link: AgentLink) -> dict[str, object]:
        """Register (or re-register) a node; returns the node.registered payload. ValueError: bad hello."""
        payload = self.registry.register(hello, now_ms=now_ms())
        if hello.node_id in self.drained:
            self.registry.drain(hello.node_id)  # a drain outlives reconnects and krakod restarts (it is in the log)
            link.send(agent_pb2.Drain(reason="this node is drained"))
        previous = self.links.get(hello.node_id)
        if previous is not None and previous is not link:
            previous.close("replaced by a newer connection of the same node")
        self.links[hello.node_id] = link
        self._rescan_now = True  # a new node may fit what nothing fit before
        self._wake_scheduler.set()
        return payload

    def node_left(self, node_id: str, link: AgentLink) -> bool:
        """The link closed. True when the node went down (the caller appends node.unavailable)."""
        if self.links.get(node_id) is not link:
            return False
        del self.links[node_id]
        down = self.registry.disconnect(node_id, connection_id=link.connection_id)
        for work_unit_id in [u for u, holders in self._holders.items() if node_id in holders]:
            unit = self.units.get(work_unit_id)
            if unit is not None and unit.state == SCHEDULED:
                self._add_timer(now_ms(), "dispatch", unit, unit.round)  # its offer is lost: re-place now
        return down

    def heartbeat(self, node_id: str, beat: agent_pb2.Heartbeat) -> list[agent_pb2.StopUnit]:
        """Record measurements, extend the node's leases, and list attempts it must stop."""
        if node_id not in self.registry:
            return []
        measured = Measurements(
            cpu_load=beat.cpu_load,
            in_flight=beat.in_flight,
            queue_depth=beat.queue_depth,
            utilization=beat.utilization,
            memory_available_bytes=beat.memory_available_bytes or None,
        )
        health = self.registry.heartbeat(node_id, measured, now_ms=now_ms())
        if self.registry.take_freed_kinds():
            # The agent's own count said it was full until now: work that waited for it can go.
            self._wake_scheduler.set()
        if health is not None:
            self._spawn_append([NewEvent(type="node.health.updated", source=f"agentd:{node_id}", payload=health)])
        return self.extend_leases(node_id, beat.running)

    def extend_leases(self, node_id: str, running: Any) -> list[agent_pb2.StopUnit]:
        stops: list[agent_pb2.StopUnit] = []
        expires = now_ms() + self.config.timing.lease_ms
        for ref in running:
            unit = self.units.get(ref.work_unit_id)
            if unit is None:
                continue
            if unit.attempt == ref.attempt and unit.state in HELD and unit.node_id == node_id:
                self._leases[unit.work_unit_id] = (node_id, unit.attempt, expires)
            elif unit.state == "cancelled" or (
                not unit.terminal and (unit.attempt, unit.node_id) != (ref.attempt, node_id)
            ):
                # Live work that is no longer this node's is stopped; finished attempts just wait for their ack.
                stops.append(
                    agent_pb2.StopUnit(work_unit_id=ref.work_unit_id, attempt=ref.attempt, reason="no longer yours")
                )
        return stops

    def drain(self, node_id: str, *, undo: bool = False) -> bool:
        """Stop (or, with undo, resume) new placements on a node; a drained node keeps it across reconnects."""
        if undo:
            self.drained.discard(node_id)
            self.registry.undrain(node_id)
            self._rescan_now = True
            self._wake_scheduler.set()
            return node_id in self.registry
        self.drained.add(node_id)
        if node_id not in self.registry:
            return False
        self.registry.drain(node_id)
        link = self.links.get(node_id)
        if link is not None:
            link.send(agent_pb2.Drain(reason="drain requested by an operator"))
        return True

    def stability_class(self, node_id: str) -> str:
        node = self.registry.get(node_id)
        return node.hello.stability_class if node is not None else "community"

    # -- scheduling --------------------------------------------------------------

    async def _schedule_loop(self) -> None:
        while True:
            await self._wake_scheduler.wait()
            self._wake_scheduler.clear()
            try:
                await self._schedule_pass()
            except Exception:
                log.exception("scheduling pass failed")

    async def _schedule_pass(self) -> None:
        events: list[NewEvent] = []
        guards: list[Any] = []
        offers: list[tuple[Unit, tuple[str, ...]]] = []
        reservations: dict[int, tuple[Unit, Any]] = {}  # index of a budget.reserved event -> (unit, its guard)
        placed = 0
        now = now_ms()
        trust = self.trust()
        fanout = self.config.multi_agent_fanout
        if self._rescan_now:
            self._rescan_now = False
            for kind, parked in self._parked.items():
                heap = self._ready.setdefault(kind, [])
                for entry in parked:
                    heapq.heappush(heap, entry)
                parked.clear()
        for kind, heap in self._ready.items():
            if not heap:
                continue
            blocked: list[tuple[int, int, str, int]] = []
            while heap and placed < self.max_pass_units and len(blocked) < self.max_blocked_per_pass:
                if not self.registry.free_states(kind):
                    self._defer_unplaced(kind, events, guards)
                    break
                entry = heapq.heappop(heap)
                unit = self.units.get(entry[2])
                if unit is None or unit.state != PENDING or unit.attempt != entry[3]:
                    continue  # stale entry: the unit moved on
                if unit.spec.get("depends_on") and not self._dependencies_met(unit, events, guards):
                    continue  # waiting for a dependency (re-queued when it finishes), or rejected
                result = self.scheduler.place(
                    self._request(unit),
                    now_ms=now,
                    trust=trust,
                    gate=self.breakers,
                    fanout=fanout,
                    exclude=frozenset(self._excluded.get(unit.work_unit_id, ())),
                )
                if isinstance(result, Deferral):
                    blocked.append(entry)
                    if unit.deferred_attempt != unit.attempt:
                        unit.deferred_attempt = unit.attempt
                        events.append(outcomes.deferred_event(unit, result.to_payload()))
                        guards.append(guard_state(self.units, unit.attempt, frozenset({PENDING})))
                    continue
                for node_id in result.offered_to:
                    self._assign(node_id, unit.work_unit_id)
                if unit.attempt == 1 and unit.round == 0:
                    self.retry.record_dispatch(now)
                schedule_guard = guard_schedule(self.units, unit.attempt)
                reserve_events, reserve_guards = self.reserve(unit)
                if reserve_events:
                    # The worst case is reserved before the offer exists: no reservation, no schedule.
                    reservations[len(events)] = (unit, reserve_guards[0])
                    events.extend(reserve_events)
                    leader, follower = guard_pair(reserve_guards[0])
                    guards.append(leader)
                    schedule_guard = guard_all(follower, schedule_guard)
                events.append(
                    outcomes.unit_event(
                        unit, "workunit.scheduled", result.idempotency_key, result.to_payload(), "krakod:scheduler"
                    )
                )
                guards.append(schedule_guard)
                offers.append((unit, result.offered_to))
                placed += 1
            self._parked.setdefault(kind, []).extend(blocked)
            if len(blocked) >= self.max_blocked_per_pass and heap:
                self._wake_scheduler.set()  # the units behind the parked ones get their turn next pass
        if not self._rescan_armed and any(self._parked.values()):
            self._rescan_armed = True
            heapq.heappush(self._timers, (now + RESCAN_MS, next(self._counter), "rescan", "", 0, 0))
            self._wake_timers.set()
        if not events:
            return
        # Offers leave once the schedule is decided, not committed: an offer grants nothing until a claim
        # commits, and a failed commit closes the log (krakod stops), so no offer can outlive its decision.
        results = await self.log.append_many(events, guards=guards, durable=False)
        for index, (unit, guard) in reservations.items():
            refused = results[index].refused
            if refused is not None and self.on_reservation_refused is not None:
                await self.on_reservation_refused(unit, guard, refused)
        offer_results = [r for r, e in zip(results, events, strict=True) if e.type == "workunit.scheduled"]
        due = now_ms()
        for (unit, node_ids), appended in zip(offers, offer_results, strict=True):
            if not appended.created:
                for node_id in node_ids:
                    self._unassign(node_id, unit.work_unit_id)
                continue
            self._send_offer(unit, node_ids)
            timeout = int(unit.spec.get("dispatch_timeout_ms") or self.config.timing.dispatch_timeout_ms)
            self._add_timer(due + timeout, "dispatch", unit, unit.round)
        if placed >= self.max_pass_units:
            self._wake_scheduler.set()  # more to place: yield to the loop, then go on

    def _dependencies_met(self, unit: Unit, events: list[NewEvent], guards: list[Any]) -> bool:
        """DAG invariant: a unit runs only after every dependency completed; a failed one rejects it.

        Dependencies must exist when a unit is submitted, so the graph is acyclic by construction.
        """
        waiting = False
        for dep_id in unit.spec["depends_on"]:
            dep = self.units.get(dep_id)
            if dep is None or (dep.terminal and dep.state != "completed"):
                reason = f"dependency {dep_id} {'is unknown' if dep is None else 'ended ' + dep.state}"
                events.append(
                    outcomes.unit_event(
                        unit,
                        "workunit.rejected",
                        f"reject:{unit.work_unit_id}",
                        {"reason": reason, "code": "DEPENDENCY_FAILED", "rule": "depends_on"},
                        "krakod:scheduler",
                    )
                )
                guards.append(guard_state(self.units, unit.attempt, frozenset({PENDING})))
                return False
            if not dep.terminal:
                waiters = self._waiting_on.setdefault(dep_id, [])
                if unit.work_unit_id not in waiters:
                    waiters.append(unit.work_unit_id)
                waiting = True
        return not waiting

    def _request(self, unit: Unit) -> PlacementRequest:
        spec = unit.spec
        llm = spec.get("llm") or {}
        region = str(spec.get("region") or "")
        return PlacementRequest(
            work_unit_id=unit.work_unit_id,
            kind=unit.kind,
            attempt=unit.attempt,
            round=unit.round + 1,
            handler=str(spec.get("handler") or "") if unit.kind == "cpu" else "",
            priority=unit.priority,
            region=region,
            region_required=bool(spec.get("region_required")) and bool(region),
            min_runtime_version=str(spec.get("min_runtime_version") or ""),
            privacy=str(spec.get("privacy") or ""),
            llm_tier=str(llm.get("tier") or ""),
            llm_model=str(llm.get("model") or ""),
        )

    def _defer_unplaced(self, kind: str, events: list[NewEvent], guards: list[Any]) -> None:
        """No node of `kind` has a free slot. If none is even connected, log why the new units wait."""
        if self.registry.excluded(kind).get("capacity", 0) > 0:
            return  # busy nodes: ordinary queueing, visible as queue depth
        reasons = dict(self.registry.excluded(kind)) or {"no_nodes": 0}
        payload = {"round": 0, "reasons": reasons, "candidates": self.registry.population(kind)}
        pending = self._unplaced.get(kind)
        for _ in range(min(len(pending or ()), self.max_pass_units)):
            assert pending is not None
            work_unit_id, attempt = pending.popleft()
            unit = self.units.get(work_unit_id)
            if unit is None or unit.state != PENDING or unit.attempt != attempt or unit.deferred_attempt == attempt:
                continue
            unit.deferred_attempt = attempt
            events.append(outcomes.deferred_event(unit, payload))
            guards.append(guard_state(self.units, attempt, frozenset({PENDING})))

    def _send_offer(self, unit: Unit, node_ids: tuple[str, ...]) -> None:
        llm = unit.spec.get("llm") or {}
        offer = agent_pb2.Offer(
            work_unit_id=unit.work_unit_id,
            attempt=unit.attempt,
            kind=unit.kind,
            handler=str(unit.spec.get("handler", "")),
            input_json=unit.input_json,
            tenant_id=unit.tenant_id,
            execution_session_id=unit.session_id,
            run_timeout_ms=int(unit.spec.get("run_timeout_ms") or self.config.timing.run_timeout_ms),
            llm=agent_pb2.LlmSpecRef(
                tier=str(llm.get("tier", "")), model=str(llm.get("model", "")), max_tokens=int(llm.get("max_tokens", 0))
            ),
        )
        for node_id in node_ids:
            link = self.links.get(node_id)
            if link is not None:
                link.send(offer)

    # -- claims ------------------------------------------------------------------

    async def handle_claims(self, node_id: str, claims: Any) -> list[agent_pb2.ClaimDecision]:
        events: list[NewEvent] = []
        guards: list[Any] = []
        lease_ms = self.config.timing.lease_ms
        for claim in claims:
            unit = self.units.get(claim.work_unit_id)
            events.append(
                NewEvent(
                    type="workunit.claimed",
                    idempotency_key=f"claim:{claim.work_unit_id}:{claim.attempt}",
                    tenant_id=unit.tenant_id if unit else "",
                    execution_session_id=unit.session_id if unit else "",
                    work_unit_id=claim.work_unit_id,
                    source=f"agentd:{node_id}",
                    payload={"attempt": claim.attempt, "node_id": node_id, "lease_ms": lease_ms},
                )
            )
            guards.append(guard_claim(self.units, claim.attempt, node_id))
        results = await self.log.append_many(events, guards=guards)
        decisions = []
        expires = now_ms() + lease_ms
        for claim, result in zip(claims, results, strict=True):
            granted = result.event is not None and result.event.payload.get("node_id") == node_id
            unit = self.units.get(claim.work_unit_id)
            if not granted:
                if unit is not None:
                    self._unassign(node_id, unit.work_unit_id)
            elif result.created and unit is not None:
                self._leases[unit.work_unit_id] = (node_id, claim.attempt, expires)
                self._add_timer(expires, "lease", unit, 0)
            decisions.append(
                agent_pb2.ClaimDecision(
                    work_unit_id=claim.work_unit_id,
                    attempt=claim.attempt,
                    granted=granted,
                    reason="" if granted else (result.refused or "another node holds the claim"),
                    lease_ms=lease_ms,
                )
            )
        return decisions

    async def handle_started(self, node_id: str, started: Any) -> None:
        events, guards = [], []
        for ref in started:
            unit = self.units.get(ref.work_unit_id)
            if unit is None or unit.state != CLAIMED:
                continue
            events.append(
                outcomes.unit_event(
                    unit,
                    "workunit.started",
                    f"start:{ref.work_unit_id}:{ref.attempt}",
                    {"attempt": ref.attempt, "node_id": node_id},
                    f"agentd:{node_id}",
                )
            )
            guards.append(guard_holder(self.units, ref.attempt, node_id))
        if events:
            await self.log.append_many(events, guards=guards)

    # -- results -----------------------------------------------------------------

    async def handle_results(self, node_id: str, results: Any) -> list[agent_pb2.ResultAck]:
        stability = self.stability_class(node_id)
        now = now_ms()
        events: list[NewEvent] = []
        guards: list[Any] = []
        spans: list[tuple[agent_pb2.Result, int, int]] = []  # result, first event index, count
        for result in results:
            start = len(events)
            unit = self.units.get(result.work_unit_id)
            if unit is not None:
                new_events = self._result_events(unit, result, node_id, stability, now)
                events.extend(new_events)
                guards.extend(self._result_guards(unit, result.attempt, node_id, new_events))
            spans.append((result, start, len(events) - start))
        appended = await self.log.append_many(events, guards=guards) if events else []
        acks = []
        for result, start, count in spans:
            outcome = appended[start : start + count]
            if not outcome:
                accepted, reason = False, "unknown work unit"
            else:
                accepted, reason = outcomes.result_verdict(outcome[-1], node_id, result.attempt)
                if outcome[-1].created:
                    self.breakers.record(
                        node_id, None if result.success else (result.error_code or "EXECUTION_ERROR"), now
                    )
            acks.append(
                agent_pb2.ResultAck(
                    work_unit_id=result.work_unit_id, attempt=result.attempt, accepted=accepted, reason=reason
                )
            )
        return acks

    def _result_guards(self, unit: Unit, attempt: int, node_id: str, events: list[NewEvent]) -> list[Any]:
        """Every event of a result needs the claim holder; a retry decision also needs its failure accepted."""
        holder = guard_holder(self.units, attempt, node_id)
        if events[-1].type.startswith("workunit.retry."):
            leader, follower = guard_pair(holder)
            return [holder] * (len(events) - 2) + [leader, follower]
        return [holder] * len(events)

    def _result_events(
        self, unit: Unit, result: agent_pb2.Result, node_id: str, stability: str, now: int
    ) -> list[NewEvent]:
        events: list[NewEvent] = []
        llm_summary = None
        if result.HasField("llm"):
            llm, llm_summary = outcomes.llm_event(unit, result, node_id)
            events.append(llm)
        if result.success:
            events.append(outcomes.completed_event(unit, result, node_id, stability, llm_summary))
            return events
        # Decide the retry only for the current attempt of the claim holder: anything else is fenced anyway.
        if unit.attempt != result.attempt or unit.node_id != node_id or unit.state not in HELD:
            events.append(outcomes.failed_event(unit, result, node_id, stability, final=True, retry_reason="fenced"))
            return events
        decision = self.retry.decide(
            self._facts(unit, result.attempt),
            AttemptError(error_code=result.error_code or "EXECUTION_ERROR", retryable=result.retryable),
            now_ms=now,
        )
        events.append(
            outcomes.failed_event(
                unit, result, node_id, stability, final=not decision.retry, retry_reason=decision.reason
            )
        )
        events.append(outcomes.retry_event(unit, decision.event_type, decision.to_payload()))
        return events

    def _facts(self, unit: Unit, attempt: int, *, idempotent: bool | None = None) -> RetryFacts:
        return RetryFacts(
            work_unit_id=unit.work_unit_id,
            tenant_id=unit.tenant_id,
            attempt=attempt,
            idempotent=bool(unit.spec.get("idempotent")) if idempotent is None else idempotent,
            priority=unit.priority if unit.priority in PRIORITIES else "p2",
            max_attempts=int(unit.spec.get("max_attempts") or 0),
        )

    # -- cancellation --------------------------------------------------------------

    async def cancel(self, unit: Unit, reason: str, source: str) -> bool:
        holder, attempt, offered = unit.node_id, unit.attempt, unit.offered_to
        result = await self.log.append(
            outcomes.unit_event(
                unit,
                "workunit.cancelled",
                f"cancel:{unit.work_unit_id}",
                {"reason": reason, "attempt": attempt},
                source,
            ),
            guard=guard_not_terminal(self.units),
        )
        if result.created:
            stop = agent_pb2.StopUnit(work_unit_id=unit.work_unit_id, attempt=attempt, reason=f"cancelled: {reason}")
            for node_id in {holder, *offered} - {None}:
                link = self.links.get(str(node_id))
                if link is not None:
                    link.send(stop)
        return result.created

    # -- timers --------------------------------------------------------------------

    async def _timer_loop(self) -> None:
        while True:
            timeout = None
            if self._timers:
                timeout = max(0.0, (self._timers[0][0] - now_ms()) / 1000)
            if timeout is None or timeout > 0:
                self._wake_timers.clear()
                try:
                    await asyncio.wait_for(self._wake_timers.wait(), timeout)
                except TimeoutError:
                    pass
                continue
            try:
                await self._fire_due()
            except Exception:
                log.exception("timer pass failed")

    async def _fire_due(self) -> None:
        now = now_ms()
        events: list[NewEvent] = []
        guards: list[Any] = []
        expired_nodes: list[str] = []
        fired = 0
        while self._timers and self._timers[0][0] <= now and fired < self.max_timer_batch:
            fired += 1
            _, _, kind, work_unit_id, attempt, round_ = heapq.heappop(self._timers)
            if kind == "rescan":
                self._rescan_armed = False
                self._rescan_now = True
                self._wake_scheduler.set()
                continue
            unit = self.units.get(work_unit_id)
            if unit is None or unit.attempt != attempt or unit.terminal:
                continue
            if kind == "retry" and unit.state == PENDING:
                self._push_ready(unit)
            elif kind == "dispatch" and unit.state == SCHEDULED and unit.round == round_:
                self._excluded.setdefault(work_unit_id, set()).update(unit.offered_to)
                events.append(outcomes.requeue_event(unit, "dispatch_timeout"))
                guards.append(guard_state(self.units, attempt, frozenset({SCHEDULED})))
            elif kind == "lease" and unit.state in HELD:
                lease = self._leases.get(work_unit_id)
                if lease is not None and lease[2] > now and lease[1] == attempt:
                    self._add_timer(lease[2], "lease", unit, 0)  # extended since: check again then
                    continue
                events.extend(self._expiry_events(unit, now))
                guards.extend(guard_pair(guard_holder(self.units, attempt, unit.node_id or "")))
                expired_nodes.append(unit.node_id or "")
        if events:
            await self.log.append_many(events, guards=guards)
        for node_id in expired_nodes:
            self.breakers.record(node_id, "LEASE_EXPIRED", now)

    def _expiry_events(self, unit: Unit, now: int) -> list[NewEvent]:
        # A lost agent is not the unit's fault: an expired lease is retried even when the unit is not marked
        # idempotent, because the old attempt's result is fenced and can never be accepted or billed.
        decision = self.retry.decide(
            self._facts(unit, unit.attempt, idempotent=True),
            AttemptError(error_code="LEASE_EXPIRED", retryable=True),
            now_ms=now,
        )
        lease_ms = self.config.timing.lease_ms
        return [
            outcomes.expired_event(unit, lease_ms, final=not decision.retry, retry_reason=decision.reason),
            outcomes.retry_event(unit, decision.event_type, decision.to_payload()),
        ]

    async def _tick_loop(self) -> None:
        """Node TTL and congestion, on a tick at our own pace (TTL accuracy is ttl/4)."""
        ttl_ms = self.config.timing.node_ttl_ms
        while True:
            await asyncio.sleep(ttl_ms / 4000)
            try:
                self._tick(ttl_ms)
            except Exception:
                log.exception("tick failed")

    def _tick(self, ttl_ms: int) -> None:
        now = now_ms()
        for node_id in self.registry.expired(now_ms=now, ttl_ms=ttl_ms):
            link = self.links.get(node_id)
            if link is not None:
                log.warning("node %s sent no heartbeat for %d ms: closing its stream", node_id, ttl_ms)
                link.close("heartbeat_ttl")  # its session ends and appends node.unavailable
            else:
                self.registry.mark_unavailable(node_id)
        change = self.congestion.observe(
            CongestionSignals(
                queue_depth=self.queue_depth(),
                dispatch_latency_p95_ms=self.queue_wait_p95_ms(),
                unhealthy_fraction=self.registry.unhealthy_fraction(),
            ),
            now_ms=now,
        )
        if change is not None:
            self._spawn_append([NewEvent(type="congestion.mode.changed", source="krakod:dispatcher", payload=change)])

    # -- metrics -------------------------------------------------------------------

    def congestion_mode(self) -> str:
        return str(self.congestion.mode.value)

    def queue_depth(self) -> int:
        return self.units.counts.get(PENDING, 0)
