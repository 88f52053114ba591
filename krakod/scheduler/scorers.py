"""Scorers: each returns a value in [0, 1] for a node that passed every filter.

S = w_c·C + w_l·L + w_t·T + w_r·R, then minus the uncertainty penalty for stale health
(see placement.PlacementConfig).
"""

from __future__ import annotations

from typing import Protocol

from krakod.scheduler.filters import PlacementContext
from krakod.scheduler.registry import NodeState

__all__ = ["CapacityScorer", "LoadScorer", "RegionScorer", "Scorer", "TrustScorer"]


class Scorer(Protocol):
    @property
    def name(self) -> str: ...

    def score(self, node: NodeState, ctx: PlacementContext) -> float: ...


def _unit(value: float) -> float:
    return 0.0 if value < 0.0 else 1.0 if value > 1.0 else value


class CapacityScorer:
    """C: free slots over concurrency (headroom)."""

    name = "capacity"

    def score(self, node: NodeState, ctx: PlacementContext) -> float:
        return node.available_slots / node.concurrency


class LoadScorer:
    """L: 1 - load, where load is the worst of the agent's utilization, the daemon's
    in-flight over concurrency (the agent's report may lag) and cpu_load, capped at 1."""

    name = "load"

    def score(self, node: NodeState, ctx: PlacementContext) -> float:
        measured = node.measured
        load = node.in_flight / node.concurrency
        if measured.utilization > load:
            load = measured.utilization
        if measured.cpu_load > load:
            load = measured.cpu_load
        return 0.0 if load >= 1.0 else 1.0 - load if load > 0.0 else 1.0


class TrustScorer:
    """T: the trust projection's score (default 0.5)."""

    name = "trust"

    def score(self, node: NodeState, ctx: PlacementContext) -> float:
        return _unit(ctx.trust.score(node.node_id))


class RegionScorer:
    """R: 1 in the unit's preferred region (or when it prefers none), else 0."""

    name = "region"

    def score(self, node: NodeState, ctx: PlacementContext) -> float:
        region = ctx.request.region
        return 1.0 if not region or node.region == region else 0.0
