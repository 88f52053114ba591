"""Placement used until the scheduler pipeline is wired: least-loaded eligible node, ties by node id."""

from __future__ import annotations

from krakod.dispatch import NoPlacement, PlacementChoice
from krakod.nodes import NodeInfo
from krakod.units import Unit


def place_simple(
    unit: Unit, nodes: dict[str, NodeInfo], excluded: frozenset[str], fanout: int = 1
) -> PlacementChoice | NoPlacement:
    reasons: dict[str, int] = {}
    eligible: list[NodeInfo] = []
    handler = str(unit.spec.get("handler", ""))
    for node in nodes.values():
        reason = None
        if not node.connected or node.draining:
            reason = "unavailable"
        elif unit.kind not in node.kinds:
            reason = "kind_not_supported"
        elif unit.kind == "cpu" and handler not in node.handlers:
            reason = "handler_not_supported"
        elif node.available_slots <= 0:
            reason = "no_capacity"
        elif node.node_id in excluded and len(nodes) > 1:
            reason = "offer_lapsed"
        if reason is not None:
            reasons[reason] = reasons.get(reason, 0) + 1
        else:
            eligible.append(node)
    if not eligible:
        return NoPlacement(reasons=reasons, candidates=len(nodes))
    eligible.sort(key=lambda n: (-n.available_slots, n.node_id))
    chosen = tuple(n.node_id for n in eligible[:fanout])
    return PlacementChoice(node_ids=chosen, payload={"eligible": len(eligible), "reason": "most_free_slots"})
