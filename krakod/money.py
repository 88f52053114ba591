"""LLM budgets inside krakod: reserve before dispatch, reject what does not fit, settle or release once.

The budget book (krakod.budgets) decides; this module connects it to the dispatcher
and the unit lifecycle. Closing a reservation (settle at completion, release on any
other terminal state) is driven by the unit table's events, so every path to a
terminal state — completion, final failure, dropped retry, expiry, cancel,
rejection — closes it. A crash between the terminal event and the closing event is
repaired at start by `recover()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from krakod.budgets import REJECT_CODE, BudgetBook, ReserveGuard, exceeded_event
from krakod.dispatch import Dispatcher
from krakod.log import Event, EventLog, LogClosed, NewEvent
from krakod.outcomes import unit_event
from krakod.units import COMPLETED, Unit, UnitTable, guard_not_terminal

log = logging.getLogger(__name__)
MAX_PENDING_CLOSES = 100_000


class MoneyRuntime:
    def __init__(self, *, log: EventLog, units: UnitTable, budgets: BudgetBook, dispatcher: Dispatcher) -> None:
        self.log = log
        self.units = units
        self.budgets = budgets
        self._closes: asyncio.Queue[str] = asyncio.Queue(maxsize=MAX_PENDING_CLOSES)
        self._task: asyncio.Task[None] | None = None
        dispatcher.reserve = self.reserve
        dispatcher.on_reservation_refused = self.reject
        units.add_listener(self._on_unit_event)

    # -- reservation (called by the dispatcher's scheduling pass) --------------------

    def reserve(self, unit: Unit) -> tuple[list[NewEvent], list[ReserveGuard]]:
        return self.budgets.reserve_events(unit)

    async def reject(self, unit: Unit, guard: Any, reason: str) -> None:
        """The reservation did not fit: budget.exceeded, then the unit is rejected; nothing reaches a provider."""
        events = []
        if isinstance(guard, ReserveGuard) and guard.refusal is not None:
            events.append(exceeded_event(unit, guard.refusal))
        events.append(
            unit_event(
                unit,
                "workunit.rejected",
                f"reject:{unit.work_unit_id}",
                {"reason": reason, "code": REJECT_CODE, "rule": "budget"},
                "krakod:budget",
            )
        )
        await self.log.append_many(events, guards=[None] * (len(events) - 1) + [guard_not_terminal(self.units)])

    # -- closing -------------------------------------------------------------------------

    def _on_unit_event(self, unit: Unit, event: Event) -> None:
        if unit.terminal and unit.kind == "llm_pod" and self._open(unit.work_unit_id):
            try:
                self._closes.put_nowait(unit.work_unit_id)
            except asyncio.QueueFull:
                log.error("budget close queue full; unit %s is closed at the next start", unit.work_unit_id)
            if self._task is None or self._task.done():
                self._task = asyncio.get_running_loop().create_task(self._close_loop(), name="krako-budget-close")

    def _open(self, work_unit_id: str) -> bool:
        reservation = self.budgets.reservation(work_unit_id)
        return reservation is not None and reservation.state == "open"

    def close_event(self, unit: Unit) -> NewEvent | None:
        if unit.state == COMPLETED:
            cost = self.budgets.actual_cost(unit.llm_total_tokens, unit.llm_tier, unit.llm_model)
            return self.budgets.settle_event(unit, cost, unit.llm_total_tokens)
        return self.budgets.release_event(unit, unit.state)

    async def _close_loop(self) -> None:
        while not self._closes.empty():
            batch = [self._closes.get_nowait() for _ in range(min(self._closes.qsize(), 500))]
            events = [e for e in (self._close_for(uid) for uid in batch) if e is not None]
            if events:
                with contextlib.suppress(LogClosed):
                    await self.log.append_many(events, guards=[self.budgets.guard_open] * len(events))

    def _close_for(self, work_unit_id: str) -> NewEvent | None:
        unit = self.units.get(work_unit_id)
        return None if unit is None else self.close_event(unit)

    async def recover(self) -> None:
        """Close reservations left open by a crash between a unit's end and its budget close."""
        events = []
        for reservation in list(self.budgets.open_reservations()):
            unit = self.units.get(reservation.work_unit_id)
            if unit is None or unit.terminal:
                event = self.close_event(unit) if unit is not None else None
                if event is not None:
                    events.append(event)
        if events:
            await self.log.append_many(events, guards=[self.budgets.guard_open] * len(events))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


__all__ = ["MoneyRuntime"]
