"""Connected agents as the daemon sees them: what they run and what they hold."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class NodeInfo:
    node_id: str
    region: str
    kinds: frozenset[str]
    concurrency: int
    version: str
    handlers: frozenset[str]
    llm_tiers: frozenset[str] = frozenset()
    llm_models: frozenset[str] = frozenset()
    llm_max_concurrency: int = 0
    llm_provider: str = ""
    stability_class: str = "community"
    connection_id: str = ""
    connected: bool = True
    draining: bool = False
    last_heartbeat_ms: int = 0
    # The agent's own measurements, from its last heartbeat.
    cpu_load: float = 0.0
    reported_in_flight: int = 0
    queue_depth: int = 0
    utilization: float = 0.0
    memory_available_bytes: int = 0
    # (work_unit_id, attempt) offered to or claimed by this node and not finished.
    assigned: set[tuple[str, int]] = field(default_factory=set)

    @property
    def available_slots(self) -> int:
        return max(0, self.concurrency - len(self.assigned))

    @property
    def health(self) -> str:
        if not self.connected:
            return "down"
        if self.draining:
            return "draining"
        if self.cpu_load > 4.0 or self.utilization > 1.5:
            return "unhealthy"
        if self.cpu_load > 2.0:
            return "degraded"
        return "healthy"
