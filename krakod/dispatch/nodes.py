"""Connected agents: hello, heartbeats (leases, health samples), disconnects and drains."""

from __future__ import annotations

from typing import Any

from krako.v1 import agent_pb2

from krakod.dispatch.state import AgentLink, DispatcherState, now_ms
from krakod.log import NewEvent
from krakod.scheduler import (
    Measurements,
    NodeHello,
)
from krakod.units import (
    HELD,
    SCHEDULED,
)


class NodeLinks(DispatcherState):
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
