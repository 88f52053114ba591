"""Timers (dispatch timeouts, lease expiry, retry backoff, rescans) and the node-TTL and congestion tick."""

from __future__ import annotations

import asyncio
import heapq
from typing import Any

from krakod import outcomes
from krakod.dispatch.state import DispatcherState, log, now_ms
from krakod.log import NewEvent
from krakod.scheduler import (
    AttemptError,
    CongestionSignals,
)
from krakod.units import (
    HELD,
    PENDING,
    SCHEDULED,
    Unit,
    guard_holder,
    guard_pair,
    guard_state,
)


class Timers(DispatcherState):
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
