"""The scheduling pass: ready units through the placement pipeline to offers (and budget reservations)."""

from __future__ import annotations

import heapq
from typing import Any

from krako.v1 import agent_pb2

from krakod import outcomes
from krakod.dispatch.state import RESCAN_MS, DispatcherState, log, now_ms
from krakod.log import NewEvent
from krakod.scheduler import (
    Deferral,
    PlacementRequest,
)
from krakod.units import (
    PENDING,
    Unit,
    guard_all,
    guard_pair,
    guard_schedule,
    guard_state,
)


class Scheduling(DispatcherState):
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
