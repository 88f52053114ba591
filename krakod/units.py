"""The work-unit table: an in-memory fold of workunit.* events.

The table is a cache of the log. It is rebuilt by replaying the log at start
and kept current as a *stager* of the log writer (see krakod.log.writer): each
event is applied when the writer stages it, so the guards below, evaluated by
the writer in seq order, always see every earlier event. Guards are how racing
decisions (two claims, a result against a lease expiry) are settled without
locks: the first event staged wins, the other is refused and never appended.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from krakod.log import Event, NewEvent

PENDING = "pending"
SCHEDULED = "scheduled"
CLAIMED = "claimed"
RUNNING = "running"
COMPLETED = "completed"
FAILED = "failed"
CANCELLED = "cancelled"
REJECTED = "rejected"
TERMINAL = frozenset({COMPLETED, FAILED, CANCELLED, REJECTED})
HELD = frozenset({CLAIMED, RUNNING})
PRIORITIES = ("p0", "p1", "p2", "p3")


@dataclass(slots=True)
class Unit:
    work_unit_id: str
    tenant_id: str
    session_id: str
    spec: dict[str, Any]
    submitted_seq: int
    submitted_ts_us: int
    state: str = PENDING
    attempt: int = 1
    round: int = 0  # offer rounds of the current attempt
    offered_to: tuple[str, ...] = ()
    node_id: str | None = None  # claim holder of the current attempt
    output_json: str = ""
    error_code: str = ""
    error_message: str = ""
    duration_ms: int = 0
    cpu_seconds: str = ""
    finished_ts_us: int = 0
    last_seq: int = 0
    retry_delay_ms: int = 0  # of the retry that made the current attempt pending
    llm_total_tokens: int = 0  # of the accepted completion (settles the unit's budget)
    llm_tier: str = ""
    llm_model: str = ""
    deferred_attempt: int = 0  # attempt for which a deferral was already logged
    _input_json: str | None = field(default=None, repr=False)

    @property
    def input_json(self) -> str:
        """The handler's input as JSON, encoded once when first needed (for an offer), not at every fold."""
        if self._input_json is None:
            self._input_json = json.dumps(self.spec.get("input"), separators=(",", ":"))
        return self._input_json

    @property
    def kind(self) -> str:
        return str(self.spec["kind"])

    @property
    def priority(self) -> str:
        return str(self.spec.get("priority", "p2"))

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL


Listener = Callable[[Unit, Event], None]


class UnitTable:
    """All work units known to the log, by id."""

    def __init__(self) -> None:
        self._units: dict[str, Unit] = {}
        self._listeners: list[Listener] = []
        self.counts: dict[str, int] = dict.fromkeys((PENDING, SCHEDULED, CLAIMED, RUNNING), 0)

    def add_listener(self, listener: Listener) -> None:
        """Called after each applied event with the unit it changed."""
        self._listeners.append(listener)

    def get(self, work_unit_id: str) -> Unit | None:
        return self._units.get(work_unit_id)

    def __len__(self) -> int:
        return len(self._units)

    def __iter__(self) -> Iterator[Unit]:
        return iter(self._units.values())

    def _set_state(self, unit: Unit, state: str) -> None:
        if unit.state in self.counts:
            self.counts[unit.state] -= 1
        unit.state = state
        if state in self.counts:
            self.counts[state] += 1

    # -- the fold ----------------------------------------------------------------

    def apply(self, event: Event) -> None:
        if not event.type.startswith("workunit.") or event.work_unit_id is None:
            return
        payload = event.payload
        if event.type == "workunit.submitted":
            unit = Unit(
                work_unit_id=event.work_unit_id,
                tenant_id=event.tenant_id,
                session_id=event.execution_session_id,
                spec=payload,
                submitted_seq=event.seq,
                submitted_ts_us=event.ts_us,
                state="",
            )
            self._units[unit.work_unit_id] = unit
            self._set_state(unit, PENDING)
        else:
            existing = self._units.get(event.work_unit_id)
            if existing is None:
                return
            unit = existing
            handler = _HANDLERS.get(event.type)
            if handler is not None:
                handler(self, unit, payload, event)
        unit.last_seq = event.seq
        for listener in self._listeners:
            listener(unit, event)

    def _scheduled(self, unit: Unit, p: dict[str, Any], event: Event) -> None:
        unit.round = int(p.get("round", unit.round + 1))
        unit.offered_to = tuple(p.get("offered_to") or [p["node_id"]])
        self._set_state(unit, SCHEDULED)

    def _deferred(self, unit: Unit, p: dict[str, Any], event: Event) -> None:
        unit.deferred_attempt = int(p.get("attempt", unit.attempt))

    def _claimed(self, unit: Unit, p: dict[str, Any], event: Event) -> None:
        unit.node_id = str(p["node_id"])
        self._set_state(unit, CLAIMED)

    def _started(self, unit: Unit, p: dict[str, Any], event: Event) -> None:
        self._set_state(unit, RUNNING)

    def _completed(self, unit: Unit, p: dict[str, Any], event: Event) -> None:
        unit.output_json = json.dumps(p.get("output"), separators=(",", ":"))
        unit.duration_ms = int(p.get("duration_ms", 0))
        unit.cpu_seconds = str(p.get("cpu_seconds", ""))
        unit.finished_ts_us = event.ts_us
        unit.error_code = unit.error_message = ""
        llm = p.get("llm") or {}
        unit.llm_total_tokens = int(llm.get("total_tokens") or 0)
        unit.llm_tier, unit.llm_model = str(llm.get("tier") or ""), str(llm.get("model") or "")
        self._set_state(unit, COMPLETED)

    def _failed(self, unit: Unit, p: dict[str, Any], event: Event) -> None:
        unit.error_code = str(p.get("error_code", ""))
        unit.error_message = str(p.get("error_message", ""))
        unit.duration_ms = int(p.get("duration_ms", 0))
        unit.cpu_seconds = str(p.get("cpu_seconds", ""))
        if p.get("final", True):
            unit.finished_ts_us = event.ts_us
            self._set_state(unit, FAILED)

    def _expired(self, unit: Unit, p: dict[str, Any], event: Event) -> None:
        unit.error_code = "LEASE_EXPIRED"
        unit.error_message = f"lease of node {p.get('node_id')} expired"
        if p.get("final", False):
            unit.finished_ts_us = event.ts_us
            self._set_state(unit, FAILED)

    def _retry(self, unit: Unit, p: dict[str, Any], event: Event) -> None:
        unit.attempt = int(p["attempt"])
        unit.round = 0
        unit.offered_to = ()
        unit.node_id = None
        unit.retry_delay_ms = int(p.get("delay_ms", 0))
        self._set_state(unit, PENDING)

    def _requeued(self, unit: Unit, p: dict[str, Any], event: Event) -> None:
        # A dispatch timeout or a daemon restart: the attempt goes back to placement.
        unit.offered_to = ()
        self._set_state(unit, PENDING)

    def _dropped(self, unit: Unit, p: dict[str, Any], event: Event) -> None:
        unit.finished_ts_us = event.ts_us
        if not unit.error_code:
            unit.error_code = "RETRY_DROPPED"
        unit.error_message = f"retry dropped: {p.get('reason', '')}"
        self._set_state(unit, FAILED)

    def _cancelled(self, unit: Unit, p: dict[str, Any], event: Event) -> None:
        unit.finished_ts_us = event.ts_us
        unit.error_code = "CANCELLED"
        unit.error_message = str(p.get("reason", ""))
        self._set_state(unit, CANCELLED)

    def _rejected(self, unit: Unit, p: dict[str, Any], event: Event) -> None:
        unit.finished_ts_us = event.ts_us
        unit.error_code = str(p.get("code", "REJECTED"))
        unit.error_message = str(p.get("reason", ""))
        self._set_state(unit, REJECTED)


_HANDLERS: dict[str, Callable[[UnitTable, Unit, dict[str, Any], Event], None]] = {
    "workunit.scheduled": UnitTable._scheduled,
    "workunit.scheduling.deferred": UnitTable._deferred,
    "workunit.claimed": UnitTable._claimed,
    "workunit.started": UnitTable._started,
    "workunit.completed": UnitTable._completed,
    "workunit.failed": UnitTable._failed,
    "workunit.claim.expired": UnitTable._expired,
    "workunit.retry.scheduled": UnitTable._retry,
    "workunit.requeued": UnitTable._requeued,
    "workunit.retry.dropped": UnitTable._dropped,
    "workunit.cancelled": UnitTable._cancelled,
    "workunit.rejected": UnitTable._rejected,
}


# -- guards: evaluated by the log writer against the table at the event's position --


def guard_schedule(table: UnitTable, attempt: int) -> Callable[[NewEvent], str | None]:
    def guard(new: NewEvent) -> str | None:
        unit = table.get(new.work_unit_id or "")
        if unit is None or unit.state != PENDING or unit.attempt != attempt:
            return "unit is no longer waiting for placement"
        return None

    return guard


def guard_claim(table: UnitTable, attempt: int, node_id: str) -> Callable[[NewEvent], str | None]:
    def guard(new: NewEvent) -> str | None:
        unit = table.get(new.work_unit_id or "")
        if unit is None:
            return "unknown work unit"
        if unit.attempt != attempt:
            return f"attempt {attempt} is not current (current is {unit.attempt})"
        if unit.state != SCHEDULED:
            return f"unit is {unit.state}, not open for claims"
        if node_id not in unit.offered_to:
            return "unit was not offered to this node"
        return None

    return guard


def guard_holder(table: UnitTable, attempt: int, node_id: str) -> Callable[[NewEvent], str | None]:
    """Results, starts and expiries are accepted only for the current attempt of its claim holder."""

    def guard(new: NewEvent) -> str | None:
        unit = table.get(new.work_unit_id or "")
        if unit is None:
            return "unknown work unit"
        if unit.attempt != attempt:
            return f"fenced: attempt {attempt} is not current (current is {unit.attempt})"
        if unit.state not in HELD:
            return f"fenced: unit is {unit.state}"
        if unit.node_id != node_id:
            return "fenced: this node does not hold the claim"
        return None

    return guard


def guard_not_terminal(table: UnitTable) -> Callable[[NewEvent], str | None]:
    def guard(new: NewEvent) -> str | None:
        unit = table.get(new.work_unit_id or "")
        if unit is None:
            return "unknown work unit"
        if unit.terminal:
            return f"unit is already {unit.state}"
        return None

    return guard


def guard_state(table: UnitTable, attempt: int, states: frozenset[str]) -> Callable[[NewEvent], str | None]:
    def guard(new: NewEvent) -> str | None:
        unit = table.get(new.work_unit_id or "")
        if unit is None or unit.attempt != attempt or unit.state not in states:
            return "unit moved on"
        return None

    return guard


def guard_pair(
    first: Callable[[NewEvent], str | None],
) -> tuple[Callable[[NewEvent], str | None], Callable[[NewEvent], str | None]]:
    """Guards for two events decided together: the second is accepted only if the first was.

    The writer evaluates guards in order, so the follower (e.g. the retry decision after a
    failure) sees the outcome of its leader (the failure itself) in the same batch.
    """
    accepted = [False]

    def leader(new: NewEvent) -> str | None:
        reason = first(new)
        accepted[0] = reason is None
        return reason

    def follower(new: NewEvent) -> str | None:
        return None if accepted[0] else "the event it follows was refused"

    return leader, follower


def guard_all(*guards: Callable[[NewEvent], str | None]) -> Callable[[NewEvent], str | None]:
    """All guards must accept; the first refusal is the reason."""

    def guard(new: NewEvent) -> str | None:
        for check in guards:
            reason = check(new)
            if reason is not None:
                return reason
        return None

    return guard
