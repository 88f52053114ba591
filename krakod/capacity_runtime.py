"""Capacity inside krakod: live metrics → controller → events → admission, and the scale actuator.

The admission mode the gateway enforces is a projection of the log's capacity
events (CapacityView, fed by the log stager), so it is the same after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from pathlib import Path
from typing import Any

import grpc

from krakod.capacity import (
    CAPACITY_EVENT_TYPES,
    Actuator,
    CapacityController,
    CapacityView,
    CommandHookActuator,
    CommandHookOptions,
    LocalProcessActuator,
    LocalProcessOptions,
    MetricsSample,
    NullActuator,
    SimulatedPressure,
    admit,
)
from krakod.config import CapacityOptions
from krakod.dispatch import Dispatcher, now_ms
from krakod.log import Event, EventLog

log = logging.getLogger(__name__)
MAX_WAIT_SAMPLES = 20_000


class QueueWaits:
    """Recent queue waits (pending → claimed), for W95. Bounded."""

    def __init__(self) -> None:
        self._samples: deque[tuple[int, int]] = deque(maxlen=MAX_WAIT_SAMPLES)  # (at_ms, wait_ms)

    def record(self, wait_ms: int) -> None:
        self._samples.append((now_ms(), wait_ms))

    def p95_seconds(self, window_ms: int) -> float:
        since = now_ms() - window_ms
        waits = sorted(w for at, w in self._samples if at >= since)
        if not waits:
            return 0.0
        return waits[min(len(waits) - 1, int(0.95 * len(waits)))] / 1000


class CapacityRuntime:
    def __init__(self, *, options: CapacityOptions, log: EventLog, dispatcher: Dispatcher, data_dir: Path) -> None:
        self.options = options
        self.log = log
        self.dispatcher = dispatcher
        self.data_dir = data_dir
        self.view = CapacityView(default_replicas=options.controller.replicas_min)
        self.controller = CapacityController(config=options.controller)
        self.waits = QueueWaits()
        self.actuator: Actuator = NullActuator()
        self._task: asyncio.Task[None] | None = None
        self._restore_events: list[Event] = []

    def on_event(self, event: Event) -> None:
        """Stager/replay hook: the admission view and the controller's state are folds of capacity events."""
        if event.type in CAPACITY_EVENT_TYPES:
            self.view.apply(event)
            self._restore_events.append(event)

    def start(self, port: int) -> None:
        self.controller.restore(self._restore_events)
        self._restore_events = []
        self.actuator = self._actuator(port)
        source: Any = self._live_metrics
        if self.options.simulate_pressure:
            source = SimulatedPressure(profile=self.options.simulate_pressure)
        self._task = asyncio.create_task(
            self.controller.run(source, self.log.append, actuator=self.actuator), name="krako-capacity"
        )

    def _actuator(self, port: int) -> Actuator:
        if self.options.scale_exec:
            return CommandHookActuator(options=CommandHookOptions(command=self.options.scale_exec))
        if self.options.autoscale_local_agents:
            agents_dir = self.data_dir / "autoscaled"
            return LocalProcessActuator(
                options=LocalProcessOptions(
                    argv_template=(
                        "agentd",
                        "--server",
                        f"127.0.0.1:{port}",
                        "--node-id",
                        "auto-{i}",
                        "--region",
                        "local",
                        "--kinds",
                        self.options.autoscale_kinds,
                        "--concurrency",
                        str(self.options.autoscale_concurrency),
                        "--state-dir",
                        str(agents_dir / "auto-{i}"),
                    ),
                    log_dir=agents_dir,
                )
            )
        return NullActuator()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        await self.actuator.close()

    def metrics_now(self) -> MetricsSample:
        """The live metrics (never the simulated ones): what an operator sees right now."""
        return self._live_metrics()

    def _live_metrics(self) -> MetricsSample:
        nodes = [n for n in self.dispatcher.registry.nodes() if n.connected]
        ttl_ms = self.dispatcher.config.timing.node_ttl_ms
        now = now_ms()
        # Metrics "stop arriving" when agents are connected but none has sent a heartbeat within the TTL.
        fresh = not nodes or any(now - n.last_heartbeat_ms <= ttl_ms for n in nodes)
        total = sum(n.concurrency for n in nodes if not n.draining)
        busy = sum(min(n.in_flight, n.concurrency) for n in nodes if not n.draining)
        return MetricsSample(
            queue_depth=self.dispatcher.queue_depth(),
            wait_p95_s=self.waits.p95_seconds(int(self.options.controller.window_s * 1000)),
            utilization=busy / total if total else 0.0,
            fresh=fresh,
            observed_at_s=time.time() if fresh else None,
        )

    def admission(self, tenant: str, priority: str) -> tuple[grpc.StatusCode, str, str] | None:
        decision = admit(self.view.mode(), priority, mode_rule=self.view.mode_rule())
        if decision.admitted:
            return None
        return grpc.StatusCode.RESOURCE_EXHAUSTED, decision.message, decision.rule
