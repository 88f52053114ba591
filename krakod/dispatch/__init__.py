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

from krakod.dispatch.execution import Execution
from krakod.dispatch.nodes import NodeLinks
from krakod.dispatch.scheduling import Scheduling
from krakod.dispatch.state import RESCAN_MS, AgentLink, DispatcherState, now_ms
from krakod.dispatch.timers import Timers


class Dispatcher(Scheduling, Execution, NodeLinks, Timers):
    """The dispatcher: its state (state.py) and its parts, one module per concern."""

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


__all__ = ["RESCAN_MS", "AgentLink", "Dispatcher", "DispatcherState", "now_ms"]
