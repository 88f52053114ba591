"""Hard filters: a node that fails one is never scored.

Each filter is a small object with a `name` (the key of the deferral's reason counts)
and a `check` that returns None when the node fits, or a short human reason when it
does not. Filters must be pure: same node, same context, same answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from krakod.scheduler.health import HealthStatus
from krakod.scheduler.registry import NodeState
from krakod.scheduler.request import KIND_CPU, KIND_LLM, PRIVACY_LOCAL_ONLY, PlacementRequest, TrustView

__all__ = [
    "CapacityFilter",
    "CircuitFilter",
    "Filter",
    "HandlerFilter",
    "KindFilter",
    "LlmFilter",
    "NodeGate",
    "NodeStateFilter",
    "PlacementContext",
    "PrivacyFilter",
    "RegionFilter",
    "TrustFilter",
    "VersionFilter",
]


class NodeGate(Protocol):
    """Something that may close a node to new work (the circuit breakers)."""

    def allows(self, node_id: str, now_ms: int) -> bool: ...

    def dispatched(self, node_id: str, now_ms: int) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class PlacementContext:
    request: PlacementRequest
    trust: TrustView
    gate: NodeGate | None
    now_ms: int


class Filter(Protocol):
    """`applies` is asked once per placement (kube's PreFilter "skip"): a filter that
    cannot reject anything for this request is left out of the per-node loop."""

    @property
    def name(self) -> str: ...

    def applies(self, ctx: PlacementContext) -> bool: ...

    def check(self, node: NodeState, ctx: PlacementContext) -> str | None: ...


class NodeStateFilter:
    """Disabled, draining, down or disconnected nodes take nothing new."""

    name = "node_state"

    def applies(self, ctx: PlacementContext) -> bool:
        return True

    def check(self, node: NodeState, ctx: PlacementContext) -> str | None:
        if node.disabled:
            return "disabled"
        if node.draining:
            return "draining"
        if not node.connected or node.health is HealthStatus.DOWN:
            return "down"
        return None


class KindFilter:
    """The node must run the unit's kind: an llm_pod unit never lands on a CPU-only node,
    a cpu unit never on an LLM-only node."""

    name = "kind"

    def applies(self, ctx: PlacementContext) -> bool:
        return True

    def check(self, node: NodeState, ctx: PlacementContext) -> str | None:
        if ctx.request.kind not in node.kinds:
            return f"does not run {ctx.request.kind}"
        return None


class CapacityFilter:
    name = "capacity"

    def applies(self, ctx: PlacementContext) -> bool:
        return True

    def check(self, node: NodeState, ctx: PlacementContext) -> str | None:
        if node.available_slots < 1:
            return f"no free slot ({node.in_flight}/{node.concurrency} in flight)"
        return None


class RegionFilter:
    """A required region is hard; a preferred one only scores (see RegionScorer)."""

    name = "region"

    def applies(self, ctx: PlacementContext) -> bool:
        return ctx.request.region_required

    def check(self, node: NodeState, ctx: PlacementContext) -> str | None:
        request = ctx.request
        if request.region_required and node.region != request.region:
            return f"region {node.region} is not the required {request.region}"
        return None


class VersionFilter:
    name = "version"

    def applies(self, ctx: PlacementContext) -> bool:
        return ctx.request.min_version_key is not None

    def check(self, node: NodeState, ctx: PlacementContext) -> str | None:
        wanted = ctx.request.min_version_key
        if wanted is None:
            return None
        if node.version_key is None:
            return f"version {node.hello.version!r} is not semver"
        if node.version_key < wanted:
            return f"version {node.hello.version} is below {ctx.request.min_runtime_version}"
        return None


class HandlerFilter:
    """A cpu unit needs its handler on the node. A node that lists no handlers did not say,
    and is not refused (the agent answers UNKNOWN_HANDLER, which is not retryable)."""

    name = "handler"

    def applies(self, ctx: PlacementContext) -> bool:
        return ctx.request.kind == KIND_CPU and bool(ctx.request.handler)

    def check(self, node: NodeState, ctx: PlacementContext) -> str | None:
        request = ctx.request
        handlers = node.hello.handlers
        if request.kind == KIND_CPU and request.handler and handlers and request.handler not in handlers:
            return f"no handler {request.handler!r}"
        return None


class LlmFilter:
    """An llm_pod unit's tier and model (when given) must be served by the node."""

    name = "llm_model"

    def applies(self, ctx: PlacementContext) -> bool:
        return ctx.request.kind == KIND_LLM and bool(ctx.request.llm_tier or ctx.request.llm_model)

    def check(self, node: NodeState, ctx: PlacementContext) -> str | None:
        request = ctx.request
        if request.kind != KIND_LLM:
            return None
        if request.llm_tier and request.llm_tier not in node.hello.llm_tiers:
            return f"does not serve tier {request.llm_tier}"
        if request.llm_model and request.llm_model not in node.hello.llm_models:
            return f"does not serve model {request.llm_model}"
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class PrivacyFilter:
    """privacy=local_only never goes to an LLM-pod-only node or to an untrusted node
    (trust score below `min_trust`)."""

    min_trust: float
    name: str = "privacy"

    def applies(self, ctx: PlacementContext) -> bool:
        return ctx.request.privacy == PRIVACY_LOCAL_ONLY

    def check(self, node: NodeState, ctx: PlacementContext) -> str | None:
        if ctx.request.privacy != PRIVACY_LOCAL_ONLY:
            return None
        if KIND_LLM in node.kinds and KIND_CPU not in node.kinds:
            return "local_only unit on an LLM-pod-only node"
        if ctx.trust.score(node.node_id) < self.min_trust:
            return f"local_only unit on an untrusted node (trust below {self.min_trust})"
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class TrustFilter:
    """Quarantined nodes, and nodes whose trust fell below `suspend_below`, get nothing."""

    suspend_below: float
    name: str = "trust"

    def applies(self, ctx: PlacementContext) -> bool:
        return True

    def check(self, node: NodeState, ctx: PlacementContext) -> str | None:
        if node.node_id in ctx.trust.quarantined:
            return "quarantined"
        if ctx.trust.score(node.node_id) < self.suspend_below:
            return f"suspended (trust below {self.suspend_below})"
        return None


class CircuitFilter:
    """A node whose circuit breaker is open (or half-open with its probe in use)."""

    name = "circuit"

    def applies(self, ctx: PlacementContext) -> bool:
        return ctx.gate is not None

    def check(self, node: NodeState, ctx: PlacementContext) -> str | None:
        if ctx.gate is not None and not ctx.gate.allows(node.node_id, ctx.now_ms):
            return "circuit open"
        return None
