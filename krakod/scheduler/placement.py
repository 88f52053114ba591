"""The placement pipeline: candidate source → filters → scorers → limit → rank → anti-affinity.

    scheduler = Scheduler(registry=registry)
    outcome = scheduler.place(request, now_ms=now_ms, trust=trust, gate=breakers, fanout=1)

Steps, in order (Nomad's stack.go, in miniature):
1. Candidate source: the registry's free index for the unit's kind (the required region,
   or the preferred region first and then the others), read in a rotation that starts at
   an offset derived from sha256(work_unit_id:attempt:round), so different units look at
   different nodes and the same unit always looks at the same ones.
2. Filters, cheapest first; the first failing one rejects the node and is counted.
3. Limit: stop after `max_feasible` nodes passed (or `max_examined` were looked at), so
   the cost does not grow with the fleet (Nomad's LimitIterator).
4. Score each feasible node, minus the uncertainty penalty when its health is stale.
5. Rank: higher score, lower queue depth, smaller node id.
6. Soft anti-affinity: if the best node would exceed its consecutive-assignment streak
   and the runner-up is within `anti_affinity_margin`, the runner-up is chosen.

Deterministic: the same registry state, request, trust, gate and streak give the same
outcome. The only state the scheduler keeps is the streak (last node, run length).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from krakod.scheduler.filters import (
    CapacityFilter,
    CircuitFilter,
    Filter,
    HandlerFilter,
    KindFilter,
    LlmFilter,
    NodeGate,
    NodeStateFilter,
    PlacementContext,
    PrivacyFilter,
    RegionFilter,
    TrustFilter,
    VersionFilter,
)
from krakod.scheduler.registry import ALL_REGIONS, NodeRegistry, NodeState
from krakod.scheduler.request import PlacementRequest, TrustView
from krakod.scheduler.results import Candidate, Deferral, Placement, micro
from krakod.scheduler.scorers import CapacityScorer, LoadScorer, RegionScorer, Scorer, TrustScorer

__all__ = ["PlacementConfig", "Scheduler", "ScoreWeights", "default_filters"]

_DEFAULT_TRUST = TrustView()


@dataclass(frozen=True, slots=True, kw_only=True)
class ScoreWeights:
    """Weights of S = w_c·C + w_l·L + w_t·T + w_r·R; they must sum to 1."""

    capacity: float = 0.35
    load: float = 0.30
    trust: float = 0.25
    region: float = 0.10

    def __post_init__(self) -> None:
        weights = self.as_tuple()
        if any(not 0.0 <= w <= 1.0 for w in weights):
            raise ValueError(f"placement weights must each be within [0, 1], got {self}")
        total = sum(weights)
        if abs(total - 1.0) > 1e-9:
            raise ValueError(
                f"placement weights must sum to 1, got {total:g} "
                f"(capacity={self.capacity}, load={self.load}, trust={self.trust}, region={self.region})"
            )

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.capacity, self.load, self.trust, self.region)


@dataclass(frozen=True, slots=True, kw_only=True)
class PlacementConfig:
    weights: ScoreWeights = field(default_factory=ScoreWeights)
    stale_health_ms: int = 15_000  # health older than this is uncertain...
    stale_health_penalty: float = 0.15  # ...and costs this much score
    streak_limit: int = 3  # at most this many consecutive placements on one node, given a near-tie
    anti_affinity_margin: float = 0.03  # "near-tie": runner-up within this score of the best
    max_feasible: int = 8  # score at most this many feasible nodes (Nomad's LimitIterator)
    max_examined: int = 256  # and look at no more than this many nodes in all
    max_fanout: int = 8  # multi-agent mode offers a unit to at most this many nodes
    suspend_trust_below: float = 0.2  # trust under this suspends a node
    local_only_min_trust: float = 0.5  # privacy=local_only needs at least this trust

    def __post_init__(self) -> None:
        if self.streak_limit < 1:
            raise ValueError(f"streak_limit must be at least 1, got {self.streak_limit}")
        if not 1 <= self.max_feasible <= self.max_examined:
            raise ValueError("placement config needs 1 <= max_feasible <= max_examined")
        if not 1 <= self.max_fanout <= self.max_examined:
            raise ValueError("placement config needs 1 <= max_fanout <= max_examined")
        if self.stale_health_ms < 0 or not 0.0 <= self.stale_health_penalty <= 1.0:
            raise ValueError("placement config needs stale_health_ms >= 0 and a penalty within [0, 1]")
        if not 0.0 <= self.anti_affinity_margin < 1.0:
            raise ValueError("anti_affinity_margin must be within [0, 1)")


def default_filters(config: PlacementConfig) -> tuple[Filter, ...]:
    """The hard filters, cheapest and most selective first."""
    return (
        NodeStateFilter(),  # drained/disabled/down nodes take nothing new
        KindFilter(),  # cpu never on LLM-only nodes, llm_pod never on CPU-only nodes
        CapacityFilter(),  # a free slot is needed
        RegionFilter(),  # region_required is hard
        VersionFilter(),  # min_runtime_version
        HandlerFilter(),  # the cpu handler must exist there
        LlmFilter(),  # the tier/model must be served there
        PrivacyFilter(min_trust=config.local_only_min_trust),  # local_only stays local and trusted
        TrustFilter(suspend_below=config.suspend_trust_below),  # quarantined/suspended nodes
        CircuitFilter(),  # open circuit breakers
    )


class _Streak:
    """Consecutive placements on the same node."""

    __slots__ = ("length", "node_id")

    def __init__(self) -> None:
        self.node_id = ""
        self.length = 0

    def of(self, node_id: str) -> int:
        return self.length if node_id == self.node_id else 0

    def record(self, node_id: str) -> None:
        if node_id == self.node_id:
            self.length += 1
        else:
            self.node_id, self.length = node_id, 1


class Scheduler:
    """Places one attempt of one unit at a time. Not thread-safe; call from one task."""

    def __init__(
        self,
        *,
        registry: NodeRegistry,
        config: PlacementConfig | None = None,
        filters: Sequence[Filter] | None = None,
    ) -> None:
        self.registry = registry
        self.config = config or PlacementConfig()
        self.filters: tuple[Filter, ...] = tuple(filters) if filters is not None else default_filters(self.config)
        self._scorers: tuple[Scorer, ...] = (CapacityScorer(), LoadScorer(), TrustScorer(), RegionScorer())
        self._weights = self.config.weights.as_tuple()
        self._streak = _Streak()

    def streak(self, node_id: str) -> int:
        """How many placements in a row went to `node_id` (0 unless it got the last one)."""
        return self._streak.of(node_id)

    def place(
        self,
        request: PlacementRequest,
        *,
        now_ms: int,
        trust: TrustView | None = None,
        gate: NodeGate | None = None,
        fanout: int = 1,
        exclude: frozenset[str] = frozenset(),
    ) -> Placement | Deferral:
        """Choose a node (and up to `fanout` - 1 runners-up to offer to as well), or defer.

        A Placement updates the anti-affinity streak and tells `gate` (the breakers) which
        nodes were sent work (a half-open breaker's probe); the caller appends its payload
        and reserves a slot on every node in `offered_to`. Raises ValueError for a fanout
        outside [1, max_fanout].

        `exclude` holds nodes to avoid this round (e.g. they let an offer lapse): they are
        used only when no other node fits, with the reason "excluded_fallback".
        """
        if not 1 <= fanout <= self.config.max_fanout:
            raise ValueError(f"fanout must be within [1, {self.config.max_fanout}], got {fanout}")
        ctx = PlacementContext(request=request, trust=trust or _DEFAULT_TRUST, gate=gate, now_ms=now_ms)
        limit = max(self.config.max_feasible, fanout)
        feasible: list[Candidate] = []
        fallback: list[Candidate] = []
        rejected: Counter[str] = Counter()
        details: dict[str, str] = {}
        examined = 0
        filters = [f for f in self.filters if f.applies(ctx)]
        for node in self._candidates(request):
            if len(feasible) >= limit or examined >= self.config.max_examined:
                break
            examined += 1
            for check in filters:
                why = check.check(node, ctx)
                if why is not None:
                    rejected[check.name] += 1
                    details.setdefault(check.name, f"{node.node_id}: {why}")
                    break
            else:
                (fallback if node.node_id in exclude else feasible).append(self._score(node, ctx))
        if feasible:
            return self._choose(request, sorted(feasible), fanout, gate, now_ms)
        if fallback:
            placement = self._choose(request, sorted(fallback), fanout, gate, now_ms)
            return dataclasses.replace(placement, reason="excluded_fallback")
        return self._deferral(request, rejected, details, examined)

    # -- steps -----------------------------------------------------------------------

    def _candidates(self, request: PlacementRequest) -> Iterator[NodeState]:
        digest = hashlib.sha256(f"{request.work_unit_id}:{request.attempt}:{request.round}".encode()).digest()
        seed = int.from_bytes(digest[:8], "big")
        nodes = self.registry
        if request.region:
            yield from _rotate(nodes.free_states(request.kind, request.region), seed)
            if request.region_required:
                return
        region = request.region
        for node in _rotate(nodes.free_states(request.kind, ALL_REGIONS), seed):
            if node.hello.region != region:
                yield node

    def _score(self, node: NodeState, ctx: PlacementContext) -> Candidate:
        values = tuple([scorer.score(node, ctx) for scorer in self._scorers])
        total = 0.0
        for weight, value in zip(self._weights, values, strict=True):
            total += weight * value
        stale = ctx.now_ms - node.last_heartbeat_ms > self.config.stale_health_ms
        penalty = self.config.stale_health_penalty if stale else 0.0
        return Candidate(-micro(total - penalty), node.measured.queue_depth, node.node_id, values, penalty)

    def _choose(
        self, request: PlacementRequest, ranked: list[Candidate], fanout: int, gate: NodeGate | None, now_ms: int
    ) -> Placement:
        best = ranked[0]
        chosen, reason = best, "only_candidate" if len(ranked) == 1 else "best_score"
        if (
            len(ranked) > 1
            and self._streak.of(best.node_id) >= self.config.streak_limit
            and best.score_micro - ranked[1].score_micro < micro(self.config.anti_affinity_margin)
        ):
            chosen, reason = ranked[1], "anti_affinity"
        others = [c.node_id for c in ranked if c is not chosen][: fanout - 1]
        self._streak.record(chosen.node_id)
        if gate is not None:
            for node_id in (chosen.node_id, *others):
                gate.dispatched(node_id, now_ms)
        return Placement(
            work_unit_id=request.work_unit_id,
            attempt=request.attempt,
            round=request.round,
            node_id=chosen.node_id,
            offered_to=(chosen.node_id, *others),
            chosen=chosen,
            eligible_count=len(ranked),
            reason=reason,
            ranked=tuple(ranked),
        )

    def _deferral(
        self, request: PlacementRequest, rejected: Counter[str], details: dict[str, str], examined: int
    ) -> Deferral:
        # Account for every registered node: not of this kind, outside the required
        # region, excluded by the index (state/capacity), rejected by a filter, or not
        # reached by the bounded scan.
        registry, kind = self.registry, request.kind
        scope = request.region if request.region_required else ALL_REGIONS
        reasons = Counter(rejected)
        reasons["kind"] += len(registry) - registry.population(kind)
        if request.region_required:
            reasons["region"] += registry.population(kind) - registry.population(kind, scope)
        reasons.update(registry.excluded(kind, scope))
        reasons["limit"] += len(registry.free_states(kind, scope)) - examined
        return Deferral(
            work_unit_id=request.work_unit_id,
            attempt=request.attempt,
            round=request.round,
            reasons={name: count for name, count in sorted(reasons.items()) if count > 0},
            candidates=len(registry),
            details=details,
        )


def _rotate(nodes: Sequence[NodeState], seed: int) -> Iterator[NodeState]:
    """All nodes once, starting at seed mod len(nodes), wrapping around. Lazy: a bounded
    scan reads only what it uses, whatever the bucket's size."""
    count = len(nodes)
    if count == 0:
        return
    start = seed % count
    for index in range(start, count):
        yield nodes[index]
    for index in range(start):
        yield nodes[index]
