"""Health classification and metric bands of a node, from its own heartbeat measurements.

Thresholds (defaults of `HealthThresholds`; each is the lower edge of its state):

| status      | when                                                                         |
|-------------|------------------------------------------------------------------------------|
| down        | the node is disconnected, or its heartbeats stopped for the TTL (registry)   |
| draining    | an operator drained it (registry); measurements are still recorded          |
| unhealthy   | cpu_load >= 1.5, or memory_available_bytes < 64 MiB                          |
| degraded    | cpu_load >= 0.85, utilization > 1.0 (over-committed), queue_depth >= 50, or  |
|             | memory_available_bytes < 256 MiB                                             |
| healthy     | otherwise                                                                    |

A full node (utilization 1.0) is not degraded: being busy is what nodes are for, and the
capacity filter already keeps work away from it. `memory_available_bytes=None` means the
agent did not report memory; it is then ignored.

Bands cut each metric into a few ranges so that `node.health.updated` is written when a
metric moves into another range, not on every wiggle (see `registry.HealthSampling`).
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["HealthStatus", "HealthThresholds", "Measurements", "MetricBands", "bands_of", "classify"]

_MIB = 1024 * 1024


class HealthStatus(StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"
    DRAINING = "draining"
    DOWN = "down"


@dataclass(frozen=True, slots=True, kw_only=True)
class Measurements:
    """What an agent reports in a heartbeat (see krako.v1.Heartbeat)."""

    cpu_load: float = 0.0
    in_flight: int = 0
    queue_depth: int = 0
    utilization: float = 0.0
    memory_available_bytes: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthThresholds:
    unhealthy_cpu_load: float = 1.5
    unhealthy_memory_bytes: int = 64 * _MIB
    degraded_cpu_load: float = 0.85
    degraded_utilization: float = 1.0
    degraded_queue_depth: int = 50
    degraded_memory_bytes: int = 256 * _MIB

    def __post_init__(self) -> None:
        if not 0 < self.degraded_cpu_load <= self.unhealthy_cpu_load:
            raise ValueError("health thresholds need 0 < degraded_cpu_load <= unhealthy_cpu_load")
        if not 0 <= self.unhealthy_memory_bytes <= self.degraded_memory_bytes:
            raise ValueError("health thresholds need 0 <= unhealthy_memory_bytes <= degraded_memory_bytes")


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricBands:
    """Upper-exclusive band edges; band index = number of edges <= value."""

    utilization: tuple[float, ...] = (0.25, 0.5, 0.75, 0.9, 1.0)
    cpu_load: tuple[float, ...] = (0.5, 0.85, 1.5)
    queue_depth: tuple[int, ...] = (1, 10, 50)

    def __post_init__(self) -> None:
        for name in ("utilization", "cpu_load", "queue_depth"):
            edges = getattr(self, name)
            if list(edges) != sorted(edges):
                raise ValueError(f"band edges for {name} must be ascending, got {edges}")


def classify(measured: Measurements, thresholds: HealthThresholds) -> HealthStatus:
    """Health from measurements alone (down/draining are decided by the registry)."""
    memory = measured.memory_available_bytes
    if measured.cpu_load >= thresholds.unhealthy_cpu_load:
        return HealthStatus.UNHEALTHY
    if memory is not None and memory < thresholds.unhealthy_memory_bytes:
        return HealthStatus.UNHEALTHY
    if (
        measured.cpu_load >= thresholds.degraded_cpu_load
        or measured.utilization > thresholds.degraded_utilization
        or measured.queue_depth >= thresholds.degraded_queue_depth
        or (memory is not None and memory < thresholds.degraded_memory_bytes)
    ):
        return HealthStatus.DEGRADED
    return HealthStatus.HEALTHY


def bands_of(measured: Measurements, bands: MetricBands) -> tuple[int, int, int]:
    """(utilization band, cpu_load band, queue_depth band)."""
    return (
        bisect_right(bands.utilization, measured.utilization),
        bisect_right(bands.cpu_load, measured.cpu_load),
        bisect_right(bands.queue_depth, measured.queue_depth),
    )
