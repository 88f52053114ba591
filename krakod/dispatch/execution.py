"""Claims, starts, results and cancellation: the decisions agents and clients cause."""

from __future__ import annotations

from typing import Any

from krako.v1 import agent_pb2

from krakod import outcomes
from krakod.dispatch.state import DispatcherState, now_ms
from krakod.log import NewEvent
from krakod.scheduler import (
    AttemptError,
)
from krakod.units import (
    CLAIMED,
    HELD,
    Unit,
    guard_claim,
    guard_holder,
    guard_not_terminal,
    guard_pair,
)


class Execution(DispatcherState):
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
