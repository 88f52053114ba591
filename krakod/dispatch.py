"""Dispatch: from pending units to offers, claims, results, leases and retries.

Decisions become events through the log writer with guards (krakod.units), so
races between agents, timers and clients are settled by the log itself. The
dispatcher keeps only soft state: queues of ready units, timers, and which node
holds which attempt — all rebuildable from the unit table.

Bounds: a scheduling pass places at most `max_pass_units` units and skips at
most `max_blocked_per_pass` units that fit nowhere before yielding; timers are
one heap; per-node offers leave through the agent session's bounded queue.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import itertools
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Protocol

from krako.v1 import agent_pb2

from krakod.config import Config
from krakod.log import AppendResult, Event, EventLog, NewEvent
from krakod.nodes import NodeInfo
from krakod.units import (
    CLAIMED,
    HELD,
    PENDING,
    PRIORITIES,
    SCHEDULED,
    Unit,
    UnitTable,
    guard_claim,
    guard_holder,
    guard_not_terminal,
    guard_schedule,
    guard_state,
)

log = logging.getLogger(__name__)
MICRO = Decimal("0.000001")


def now_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class AgentLink(Protocol):
    """What the dispatcher needs of a connected agent's session."""

    def send(self, item: Any) -> bool: ...

    def close(self, reason: str) -> None: ...


@dataclass(frozen=True, slots=True)
class PlacementChoice:
    node_ids: tuple[str, ...]
    payload: dict[str, Any]  # workunit.scheduled payload fields besides attempt/round/node


@dataclass(frozen=True, slots=True)
class NoPlacement:
    reasons: dict[str, int]
    candidates: int


def backoff_ms(work_unit_id: str, attempt: int) -> int:
    """Deterministic retry delay: 500 ms × 2^(attempt−2) for the attempt about to run, +≤20% hashed jitter, ≤30 s."""
    base = 500 * (2 ** max(0, attempt - 2))
    digest = hashlib.sha256(f"{work_unit_id}:{attempt}".encode()).digest()
    jitter = base * (int.from_bytes(digest[:4], "big") % 2001) // 10_000
    return int(min(30_000, base + jitter))


def cpu_seconds_from_us(cpu_time_us: int) -> str:
    return str((Decimal(cpu_time_us) / Decimal(1_000_000)).quantize(MICRO, rounding=ROUND_HALF_EVEN))


class Dispatcher:
    def __init__(
        self,
        *,
        config: Config,
        log: EventLog,
        units: UnitTable,
        place: Callable[[Unit, dict[str, NodeInfo], frozenset[str]], PlacementChoice | NoPlacement],
        max_pass_units: int = 2000,
        max_blocked_per_pass: int = 256,
    ) -> None:
        self.config = config
        self.log = log
        self.units = units
        self.place = place
        self.nodes: dict[str, NodeInfo] = {}
        self.links: dict[str, AgentLink] = {}
        self.max_pass_units = max_pass_units
        self.max_blocked_per_pass = max_blocked_per_pass
        self._ready: list[tuple[int, int, str, int]] = []  # (priority, submitted_seq, unit, attempt)
        self._timers: list[tuple[int, int, str, str, int, int]] = []  # (due_ms, n, kind, unit, attempt, round)
        self._counter = itertools.count()
        self._leases: dict[str, tuple[str, int, int]] = {}  # unit -> (node, attempt, expires_ms)
        self._excluded: dict[str, set[str]] = {}  # unit -> nodes that let an offer lapse this attempt
        # Units that became pending and have been neither placed nor deferred yet: when no node has any
        # capacity, the pass logs their deferral from here instead of scanning the whole ready heap.
        self._unplaced: deque[tuple[str, int]] = deque()
        self._wake_scheduler = asyncio.Event()
        self._wake_timers = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._pending_since: dict[str, int] = {}  # unit -> when it last became ready to place
        self.on_queue_wait: Callable[[int], None] | None = None  # called with each unit's wait at its claim
        self.dispatched_primary = 0
        self.dispatched_retry = 0
        units.add_listener(self._on_unit_event)

    # -- unit table listener (runs as the writer stages each event) --------------

    def _on_unit_event(self, unit: Unit, event: Event) -> None:
        t = event.type
        if t == "workunit.submitted" or t == "workunit.requeued":
            self._push_ready(unit)
        elif t == "workunit.retry.scheduled":
            self._release(unit)
            self._leases.pop(unit.work_unit_id, None)
            self._excluded.pop(unit.work_unit_id, None)
            self._add_timer(now_ms() + unit.retry_delay_ms, "retry", unit, 0)
        elif t == "workunit.claimed":
            since = self._pending_since.pop(unit.work_unit_id, None)
            if since is not None and self.on_queue_wait is not None:
                self.on_queue_wait(now_ms() - since)
            holder = unit.node_id or ""
            for node_id in unit.offered_to:
                if node_id != holder:
                    self._release_node(node_id, unit)
        elif unit.terminal or t == "workunit.claim.expired":
            self._pending_since.pop(unit.work_unit_id, None)
            self._release(unit)
            self._leases.pop(unit.work_unit_id, None)
            self._excluded.pop(unit.work_unit_id, None)
        if t in ("workunit.claimed", "workunit.completed", "workunit.failed", "workunit.requeued"):
            self._wake_scheduler.set()

    def _push_ready(self, unit: Unit) -> None:
        priority = PRIORITIES.index(unit.priority) if unit.priority in PRIORITIES else 2
        heapq.heappush(self._ready, (priority, unit.submitted_seq, unit.work_unit_id, unit.attempt))
        self._pending_since.setdefault(unit.work_unit_id, now_ms())
        self._unplaced.append((unit.work_unit_id, unit.attempt))
        self._wake_scheduler.set()

    def _release_node(self, node_id: str, unit: Unit) -> None:
        node = self.nodes.get(node_id)
        if node is not None:
            node.assigned.discard((unit.work_unit_id, unit.attempt))

    def _release(self, unit: Unit) -> None:
        """Free every slot this unit's current attempt holds (offers and the claim)."""
        for node_id in {*unit.offered_to, unit.node_id} - {None}:
            node = self.nodes.get(str(node_id))
            if node is not None:
                node.assigned = {a for a in node.assigned if a[0] != unit.work_unit_id}

    def _add_timer(self, due_ms: int, kind: str, unit: Unit, round_: int) -> None:
        heapq.heappush(self._timers, (due_ms, next(self._counter), kind, unit.work_unit_id, unit.attempt, round_))
        self._wake_timers.set()

    # -- lifecycle ---------------------------------------------------------------

    def recover(self) -> None:
        """After replaying the log: give held claims a fresh lease and re-place offered units."""
        now = now_ms()
        for unit in self.units:
            if unit.state in HELD and unit.node_id is not None:
                self._leases[unit.work_unit_id] = (unit.node_id, unit.attempt, now + self.config.timing.lease_ms)
                self._add_timer(now + self.config.timing.lease_ms, "lease", unit, 0)
            elif unit.state == SCHEDULED:
                self._add_timer(now, "dispatch", unit, unit.round)

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._schedule_loop(), name="krako-scheduler"),
            asyncio.create_task(self._timer_loop(), name="krako-timers"),
            asyncio.create_task(self._ttl_loop(), name="krako-node-ttl"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    # -- nodes ---------------------------------------------------------------------

    def node_joined(self, node: NodeInfo, link: AgentLink) -> None:
        previous = self.nodes.get(node.node_id)
        if previous is not None:
            # Keep what the node holds; a reconnect does not give up its claims.
            node.assigned = {a for a in previous.assigned if self._holds(node.node_id, a)}
            node.draining = previous.draining
        self.nodes[node.node_id] = node
        self.links[node.node_id] = link
        node.last_heartbeat_ms = now_ms()
        self._wake_scheduler.set()

    def _holds(self, node_id: str, assignment: tuple[str, int]) -> bool:
        unit = self.units.get(assignment[0])
        return unit is not None and unit.attempt == assignment[1] and unit.state in HELD and unit.node_id == node_id

    def node_left(self, node_id: str, link: AgentLink) -> bool:
        """Forget the link (if it is still the node's current one). Offers it had go elsewhere."""
        if self.links.get(node_id) is not link:
            return False
        del self.links[node_id]
        node = self.nodes.get(node_id)
        if node is not None:
            node.connected = False
            for work_unit_id, attempt in list(node.assigned):
                unit = self.units.get(work_unit_id)
                if unit is not None and unit.state == SCHEDULED and unit.attempt == attempt:
                    self._add_timer(now_ms(), "dispatch", unit, unit.round)
        return True

    def heartbeat(self, node_id: str, beat: agent_pb2.Heartbeat) -> list[agent_pb2.StopUnit]:
        """Record measurements, extend the leases the node holds, and list attempts it must stop."""
        node = self.nodes.get(node_id)
        if node is None:
            return []
        node.last_heartbeat_ms = now_ms()
        node.cpu_load = beat.cpu_load
        node.reported_in_flight = beat.in_flight
        node.queue_depth = beat.queue_depth
        node.utilization = beat.utilization
        node.memory_available_bytes = beat.memory_available_bytes
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
            elif unit.terminal or unit.attempt != ref.attempt or unit.node_id != node_id:
                # Results of finished attempts are still acknowledged; only live work is stopped.
                if not unit.terminal or unit.state == "cancelled":
                    stops.append(
                        agent_pb2.StopUnit(
                            work_unit_id=ref.work_unit_id, attempt=ref.attempt, reason="no longer your attempt"
                        )
                    )
        return stops

    def drain(self, node_id: str) -> NodeInfo | None:
        node = self.nodes.get(node_id)
        if node is not None:
            node.draining = True
            link = self.links.get(node_id)
            if link is not None:
                link.send(agent_pb2.Drain(reason="drain requested by an operator"))
        return node

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
        guards = []
        offers: list[tuple[Unit, tuple[str, ...]]] = []
        blocked: list[tuple[int, int, str, int]] = []
        placed = 0
        while self._ready and placed < self.max_pass_units and len(blocked) < self.max_blocked_per_pass:
            if not any(n.available_slots and n.connected and not n.draining for n in self.nodes.values()):
                self._defer_unplaced(events, guards)
                break
            entry = heapq.heappop(self._ready)
            unit = self.units.get(entry[2])
            if unit is None or unit.state != PENDING or unit.attempt != entry[3]:
                continue  # stale entry: the unit moved on
            choice = self.place(unit, self.nodes, frozenset(self._excluded.get(unit.work_unit_id, ())))
            if isinstance(choice, NoPlacement):
                blocked.append(entry)
                if unit.deferred_attempt != unit.attempt:
                    unit.deferred_attempt = unit.attempt
                    events.append(self._deferred_event(unit, choice))
                    guards.append(guard_state(self.units, unit.attempt, frozenset({PENDING})))
                continue
            round_ = unit.round + 1
            for node_id in choice.node_ids:
                self.nodes[node_id].assigned.add((unit.work_unit_id, unit.attempt))
            if unit.attempt == 1 and unit.round == 0:
                self.dispatched_primary += 1
            elif unit.round == 0:
                self.dispatched_retry += 1
            events.append(
                NewEvent(
                    type="workunit.scheduled",
                    idempotency_key=f"schedule:{unit.work_unit_id}:{unit.attempt}:{round_}",
                    tenant_id=unit.tenant_id,
                    execution_session_id=unit.session_id,
                    work_unit_id=unit.work_unit_id,
                    source="krakod:scheduler",
                    payload={
                        "attempt": unit.attempt,
                        "round": round_,
                        "node_id": choice.node_ids[0],
                        "offered_to": list(choice.node_ids),
                        **choice.payload,
                    },
                )
            )
            guards.append(guard_schedule(self.units, unit.attempt))
            offers.append((unit, choice.node_ids))
            placed += 1
        for entry in blocked:
            heapq.heappush(self._ready, entry)
        if not events:
            return
        results = await self.log.append_many(events, guards=guards)
        offer_results = [r for r, e in zip(results, events, strict=True) if e.type == "workunit.scheduled"]
        due = now_ms()
        for (unit, node_ids), result in zip(offers, offer_results, strict=True):
            if not result.created:
                for node_id in node_ids:
                    self._release_node(node_id, unit)
                continue
            self._send_offer(unit, node_ids)
            timeout = int(unit.spec.get("dispatch_timeout_ms") or self.config.timing.dispatch_timeout_ms)
            self._add_timer(due + timeout, "dispatch", unit, unit.round)
        if placed >= self.max_pass_units:
            self._wake_scheduler.set()  # more to place: yield to the loop, then go on

    def _defer_unplaced(self, events: list[NewEvent], guards: list[Any]) -> None:
        """No node has a free slot: log, once per attempt, why the newly pending units wait."""
        reasons: dict[str, int] = {}
        for node in self.nodes.values():
            key = "unavailable" if not node.connected or node.draining else "no_capacity"
            reasons[key] = reasons.get(key, 0) + 1
        choice = NoPlacement(reasons=reasons, candidates=len(self.nodes))
        for _ in range(min(len(self._unplaced), self.max_pass_units)):
            work_unit_id, attempt = self._unplaced.popleft()
            unit = self.units.get(work_unit_id)
            if unit is None or unit.state != PENDING or unit.attempt != attempt or unit.deferred_attempt == attempt:
                continue
            unit.deferred_attempt = attempt
            events.append(self._deferred_event(unit, choice))
            guards.append(guard_state(self.units, attempt, frozenset({PENDING})))

    def _deferred_event(self, unit: Unit, choice: NoPlacement) -> NewEvent:
        return NewEvent(
            type="workunit.scheduling.deferred",
            idempotency_key=f"defer:{unit.work_unit_id}:{unit.attempt}",
            tenant_id=unit.tenant_id,
            execution_session_id=unit.session_id,
            work_unit_id=unit.work_unit_id,
            source="krakod:scheduler",
            payload={"attempt": unit.attempt, "reasons": choice.reasons, "candidates": choice.candidates},
        )

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
        guards = []
        refs: list[tuple[str, int]] = []
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
            refs.append((claim.work_unit_id, claim.attempt))
        results = await self.log.append_many(events, guards=guards)
        decisions = []
        expires = now_ms() + lease_ms
        for (work_unit_id, attempt), result in zip(refs, results, strict=True):
            granted = result.event is not None and json_field(result.event, "node_id") == node_id
            reason = ""
            if not granted:
                reason = result.refused or "another node holds the claim"
                unit = self.units.get(work_unit_id)
                if unit is not None:
                    self._release_node(node_id, unit)
            elif result.created:
                unit = self.units.get(work_unit_id)
                if unit is not None:
                    self._leases[work_unit_id] = (node_id, attempt, expires)
                    self._add_timer(expires, "lease", unit, 0)
            decisions.append(
                agent_pb2.ClaimDecision(
                    work_unit_id=work_unit_id, attempt=attempt, granted=granted, reason=reason, lease_ms=lease_ms
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
                NewEvent(
                    type="workunit.started",
                    idempotency_key=f"start:{ref.work_unit_id}:{ref.attempt}",
                    tenant_id=unit.tenant_id,
                    execution_session_id=unit.session_id,
                    work_unit_id=ref.work_unit_id,
                    source=f"agentd:{node_id}",
                    payload={"attempt": ref.attempt, "node_id": node_id},
                )
            )
            guards.append(guard_holder(self.units, ref.attempt, node_id))
        if events:
            await self.log.append_many(events, guards=guards)

    # -- results -----------------------------------------------------------------

    async def handle_results(self, node_id: str, results: Any) -> list[agent_pb2.ResultAck]:
        node = self.nodes.get(node_id)
        stability = node.stability_class if node else "community"
        events: list[NewEvent] = []
        guards = []
        spans: list[tuple[agent_pb2.Result, int, int]] = []  # result, first event index, count
        for result in results:
            start = len(events)
            unit = self.units.get(result.work_unit_id)
            if unit is not None:
                for new in self._result_events(unit, result, node_id, stability):
                    events.append(new)
                    guards.append(guard_holder(self.units, result.attempt, node_id))
            spans.append((result, start, len(events) - start))
        appended = await self.log.append_many(events, guards=guards) if events else []
        acks = []
        for result, start, count in spans:
            outcome = appended[start : start + count]
            if not outcome:
                accepted, reason = False, "unknown work unit"
            else:
                last = outcome[-1]
                accepted, reason = result_verdict(last, node_id, result.attempt)
            acks.append(
                agent_pb2.ResultAck(
                    work_unit_id=result.work_unit_id, attempt=result.attempt, accepted=accepted, reason=reason
                )
            )
        return acks

    def _result_events(self, unit: Unit, result: agent_pb2.Result, node_id: str, stability: str) -> list[NewEvent]:
        common = {
            "tenant_id": unit.tenant_id,
            "execution_session_id": unit.session_id,
            "work_unit_id": unit.work_unit_id,
            "source": f"agentd:{node_id}",
        }
        events: list[NewEvent] = []
        base = {"attempt": result.attempt, "node_id": node_id}
        llm_summary = None
        if result.HasField("llm"):
            inv = result.llm
            llm_payload = {
                **base,
                "provider": inv.provider,
                "model": inv.model,
                "tier": inv.tier,
                "latency_ms": inv.latency_ms,
            }
            if inv.error_code:
                llm_payload.update(
                    error_code=inv.error_code, error_message=inv.error_message, retryable=result.retryable
                )
                events.append(
                    NewEvent(
                        type="llm.invocation.failed",
                        idempotency_key=f"llm:{unit.work_unit_id}:{result.attempt}",
                        payload=llm_payload,
                        **common,
                    )
                )
            else:
                llm_payload.update(
                    tokens_in=inv.tokens_in,
                    tokens_out=inv.tokens_out,
                    total_tokens=inv.total_tokens,
                    usage_reported=inv.usage_reported,
                    estimated_cost_usd=inv.estimated_cost_usd or "0.000000",
                )
                llm_summary = {
                    k: llm_payload[k] for k in ("provider", "model", "tier", "tokens_in", "tokens_out", "total_tokens")
                }
                events.append(
                    NewEvent(
                        type="llm.invocation.completed",
                        idempotency_key=f"llm:{unit.work_unit_id}:{result.attempt}",
                        payload=llm_payload,
                        **common,
                    )
                )
        measured = {
            "duration_ms": result.duration_us // 1000,
            "cpu_seconds": cpu_seconds_from_us(result.cpu_time_us),
            "stability_class": stability,
        }
        if result.success:
            output: Any = None
            if result.output_json:
                try:
                    output = json_loads(result.output_json)
                except ValueError:
                    output = {"raw": result.output_json[:1000]}
            events.append(
                NewEvent(
                    type="workunit.completed",
                    idempotency_key=f"complete:{unit.work_unit_id}",
                    payload={**base, **measured, "output": output, "llm": llm_summary},
                    **common,
                )
            )
            return events
        retry_attempt, delay_ms, reason = self.retry_decision(unit, result.retryable, result.attempt)
        events.append(
            NewEvent(
                type="workunit.failed",
                idempotency_key=f"fail:{unit.work_unit_id}:{result.attempt}",
                payload={
                    **base,
                    **measured,
                    "error_code": result.error_code or "EXECUTION_ERROR",
                    "error_message": result.error_message[:2000],
                    "retryable": result.retryable,
                    "final": retry_attempt is None,
                    "retry_reason": reason,
                },
                **common,
            )
        )
        if retry_attempt is not None:
            events.append(self._retry_event(unit, retry_attempt, delay_ms, result.error_code or "EXECUTION_ERROR"))
        return events

    def retry_decision(self, unit: Unit, retryable: bool, attempt: int) -> tuple[int | None, int, str]:
        """(next attempt or None, delay, why). Retry only idempotent units, retryable errors, attempts left."""
        max_attempts = self.max_attempts(unit)
        if not retryable:
            return None, 0, "not retryable"
        if not unit.spec.get("idempotent", False):
            return None, 0, "unit is not idempotent"
        if attempt >= max_attempts:
            return None, 0, f"attempts exhausted ({attempt}/{max_attempts})"
        return attempt + 1, backoff_ms(unit.work_unit_id, attempt + 1), "retryable"

    def max_attempts(self, unit: Unit) -> int:
        requested = int(unit.spec.get("max_attempts") or self.config.timing.default_max_attempts)
        return min(requested, self.config.limits.max_attempts_cap)

    def _retry_event(self, unit: Unit, next_attempt: int, delay_ms: int, error_code: str) -> NewEvent:
        return NewEvent(
            type="workunit.retry.scheduled",
            idempotency_key=f"retry:{unit.work_unit_id}:{next_attempt}",
            tenant_id=unit.tenant_id,
            execution_session_id=unit.session_id,
            work_unit_id=unit.work_unit_id,
            source="krakod:dispatcher",
            payload={"attempt": next_attempt, "delay_ms": delay_ms, "error_code": error_code},
        )

    # -- cancellation --------------------------------------------------------------

    async def cancel(self, unit: Unit, reason: str, source: str) -> bool:
        holder, attempt = unit.node_id, unit.attempt
        offered = unit.offered_to
        result = await self.log.append(
            NewEvent(
                type="workunit.cancelled",
                idempotency_key=f"cancel:{unit.work_unit_id}",
                tenant_id=unit.tenant_id,
                execution_session_id=unit.session_id,
                work_unit_id=unit.work_unit_id,
                source=source,
                payload={"reason": reason, "attempt": attempt},
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
        guards = []
        checks = 0
        while self._timers and self._timers[0][0] <= now and checks < 5000:
            checks += 1
            _, _, kind, work_unit_id, attempt, round_ = heapq.heappop(self._timers)
            unit = self.units.get(work_unit_id)
            if unit is None or unit.attempt != attempt or unit.terminal:
                continue
            if kind == "retry" and unit.state == PENDING:
                self._push_ready(unit)
            elif kind == "dispatch" and unit.state == SCHEDULED and unit.round == round_:
                self._excluded.setdefault(work_unit_id, set()).update(unit.offered_to)
                events.append(self._requeue_event(unit, "dispatch_timeout"))
                guards.append(guard_state(self.units, attempt, frozenset({SCHEDULED})))
            elif kind == "lease" and unit.state in HELD:
                lease = self._leases.get(work_unit_id)
                if lease is not None and lease[2] > now and lease[1] == attempt:
                    self._add_timer(lease[2], "lease", unit, 0)  # extended since: check again then
                    continue
                events.extend(self._expiry_events(unit))
                guards.extend([guard_holder(self.units, attempt, unit.node_id or "")] * (len(events) - len(guards)))
        if events:
            await self.log.append_many(events, guards=guards)

    def _requeue_event(self, unit: Unit, reason: str) -> NewEvent:
        return NewEvent(
            type="workunit.requeued",
            idempotency_key=f"requeue:{unit.work_unit_id}:{unit.attempt}:{unit.round}",
            tenant_id=unit.tenant_id,
            execution_session_id=unit.session_id,
            work_unit_id=unit.work_unit_id,
            source="krakod:dispatcher",
            payload={
                "attempt": unit.attempt,
                "round": unit.round,
                "reason": reason,
                "offered_to": list(unit.offered_to),
            },
        )

    def _expiry_events(self, unit: Unit) -> list[NewEvent]:
        # A lost agent is not the unit's fault: an expired lease is retried even when the unit is not marked
        # idempotent, because the old attempt's result is fenced and can never be accepted or billed.
        next_attempt: int | None = None
        delay_ms, reason = 0, f"attempts exhausted ({unit.attempt}/{self.max_attempts(unit)})"
        if unit.attempt < self.max_attempts(unit):
            next_attempt, delay_ms = unit.attempt + 1, backoff_ms(unit.work_unit_id, unit.attempt + 1)
            reason = "lease expired"
        events = [
            NewEvent(
                type="workunit.claim.expired",
                idempotency_key=f"expire:{unit.work_unit_id}:{unit.attempt}",
                tenant_id=unit.tenant_id,
                execution_session_id=unit.session_id,
                work_unit_id=unit.work_unit_id,
                source="krakod:dispatcher",
                payload={
                    "attempt": unit.attempt,
                    "node_id": unit.node_id,
                    "lease_ms": self.config.timing.lease_ms,
                    "final": next_attempt is None,
                    "retry_reason": reason,
                },
            )
        ]
        if next_attempt is not None:
            events.append(self._retry_event(unit, next_attempt, delay_ms, "LEASE_EXPIRED"))
        return events

    async def _ttl_loop(self) -> None:
        """Close the stream of a node whose heartbeats stopped for node_ttl_ms (it becomes node.unavailable)."""
        ttl_ms = self.config.timing.node_ttl_ms
        while True:
            await asyncio.sleep(ttl_ms / 4000)  # a tick at our own pace: TTL accuracy is ttl/4
            now = now_ms()
            for node_id, link in list(self.links.items()):
                node = self.nodes.get(node_id)
                if node is not None and now - node.last_heartbeat_ms > ttl_ms:
                    log.warning("node %s sent no heartbeat for %d ms: closing its stream", node_id, ttl_ms)
                    link.close("heartbeat_ttl")

    # -- metrics -------------------------------------------------------------------

    def congestion_mode(self) -> str:
        return "NORMAL"

    def queue_depth(self) -> int:
        return self.units.counts.get(PENDING, 0)


def json_loads(text: str) -> Any:
    return json.loads(text)


def result_verdict(last: AppendResult, node_id: str, attempt: int) -> tuple[bool, str]:
    """Was this agent's result accepted? A resend of an accepted result is accepted again (idempotent)."""
    if last.created:
        return True, ""
    if last.event is None:
        return False, last.refused or "refused"
    payload = json_loads(last.event.payload_json)
    if payload.get("node_id") == node_id and payload.get("attempt") == attempt:
        return True, "duplicate delivery of an accepted result"
    return False, f"fenced: attempt {payload.get('attempt')} on node {payload.get('node_id')} already finished the unit"


def json_field(event: Event, name: str) -> Any:
    return json_loads(event.payload_json).get(name)
