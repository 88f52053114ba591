"""Builders for scheduler tests: a node is described by a few keywords, a fleet by a list."""

from __future__ import annotations

from dataclasses import dataclass

from krakod.scheduler import Measurements, NodeHello, NodeRegistry


@dataclass(frozen=True, kw_only=True)
class N:
    """A node in a test fleet: its hello, then the state it is driven into."""

    node_id: str
    region: str = "eu"
    kinds: tuple[str, ...] = ("cpu",)
    concurrency: int = 4
    version: str = "1.2.0"
    handlers: tuple[str, ...] = ()
    tiers: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    draining: bool = False
    disabled: bool = False
    down: bool = False
    reserved: int = 0
    utilization: float = 0.0
    cpu_load: float = 0.0
    queue_depth: int = 0
    beat_ms: int = 10_000


def hello(spec: N) -> NodeHello:
    return NodeHello(
        node_id=spec.node_id,
        region=spec.region,
        kinds=frozenset(spec.kinds),
        concurrency=spec.concurrency,
        version=spec.version,
        handlers=frozenset(spec.handlers),
        llm_tiers=frozenset(spec.tiers),
        llm_models=frozenset(spec.models),
        connection_id=f"conn-{spec.node_id}",
    )


def build_fleet(specs: list[N], registry: NodeRegistry | None = None) -> NodeRegistry:
    registry = registry or NodeRegistry()
    for spec in specs:
        registry.register(hello(spec), now_ms=0)
        registry.heartbeat(
            spec.node_id,
            Measurements(cpu_load=spec.cpu_load, utilization=spec.utilization, queue_depth=spec.queue_depth),
            now_ms=spec.beat_ms,
        )
        for _ in range(spec.reserved):
            registry.reserve_slot(spec.node_id)
        if spec.draining:
            registry.drain(spec.node_id)
        if spec.disabled:
            registry.set_disabled(spec.node_id, True)
        if spec.down:
            registry.disconnect(spec.node_id)
    return registry
