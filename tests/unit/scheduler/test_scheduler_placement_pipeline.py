"""The placement pipeline as a whole: determinism, anti-affinity, fan-out, the bounded
candidate set, payloads and configuration errors."""

from __future__ import annotations

import random
import re

import pytest
from scheduler_fleet import N, build_fleet

from krakod.scheduler import (
    BreakerBoard,
    BreakerConfig,
    Deferral,
    NodeRegistry,
    NodeState,
    Placement,
    PlacementConfig,
    PlacementContext,
    PlacementRequest,
    Scheduler,
    ScoreWeights,
    TrustView,
    default_filters,
)

NOW_MS = 10_000
DECIMAL_6 = re.compile(r"^-?\d+\.\d{6}$")


def random_fleet(seed: int, count: int) -> list[N]:
    rng = random.Random(seed)
    return [
        N(
            node_id=f"n{i:05d}",
            region=rng.choice(["eu", "us", "ap"]),
            kinds=rng.choice([("cpu",), ("llm_pod",), ("cpu", "llm_pod")]),
            concurrency=rng.randint(1, 8),
            reserved=rng.randint(0, 2),
            cpu_load=round(rng.random(), 2),
            queue_depth=rng.randint(0, 3),
            version=rng.choice(["1.0.0", "1.2.0", "2.0.0"]),
        )
        for i in range(count)
    ]


def place_many(scheduler: Scheduler, units: int) -> list[dict[str, object]]:
    payloads = []
    for i in range(units):
        request = PlacementRequest(
            work_unit_id=f"wu-{i}", kind="cpu" if i % 3 else "llm_pod", region=["eu", "us", ""][i % 3]
        )
        payloads.append(scheduler.place(request, now_ms=NOW_MS, trust=TrustView(scores={"n00003": 0.9})).to_payload())
    return payloads


def test_the_same_inputs_give_the_same_placements() -> None:
    first = place_many(Scheduler(registry=build_fleet(random_fleet(7, 300))), 200)
    second = place_many(Scheduler(registry=build_fleet(random_fleet(7, 300))), 200)
    assert first == second


def test_registration_order_does_not_change_a_placement() -> None:
    fleet = random_fleet(11, 200)
    shuffled = list(fleet)
    random.Random(3).shuffle(shuffled)
    assert place_many(Scheduler(registry=build_fleet(fleet)), 100) == place_many(
        Scheduler(registry=build_fleet(shuffled)), 100
    )


def test_a_node_on_a_streak_yields_to_a_near_tie() -> None:
    scheduler = Scheduler(registry=build_fleet([N(node_id="a"), N(node_id="b", cpu_load=0.05)]))
    chosen = [scheduler.place(PlacementRequest(work_unit_id=f"wu-{i}", kind="cpu"), now_ms=NOW_MS) for i in range(6)]
    assert [(p.node_id, p.reason) for p in chosen if isinstance(p, Placement)] == [
        ("a", "best_score"),
        ("a", "best_score"),
        ("a", "best_score"),
        ("b", "anti_affinity"),
        ("a", "best_score"),
        ("a", "best_score"),
    ]


def test_a_node_on_a_streak_keeps_winning_when_the_runner_up_is_clearly_worse() -> None:
    scheduler = Scheduler(registry=build_fleet([N(node_id="a"), N(node_id="b", cpu_load=0.5)]))
    chosen = [scheduler.place(PlacementRequest(work_unit_id=f"wu-{i}", kind="cpu"), now_ms=NOW_MS) for i in range(5)]
    assert {p.node_id for p in chosen if isinstance(p, Placement)} == {"a"}
    assert scheduler.streak("a") == 5


def test_the_streak_limit_is_configurable() -> None:
    config = PlacementConfig(streak_limit=1)
    scheduler = Scheduler(registry=build_fleet([N(node_id="a"), N(node_id="b")]), config=config)
    chosen = [scheduler.place(PlacementRequest(work_unit_id=f"wu-{i}", kind="cpu"), now_ms=NOW_MS) for i in range(4)]
    assert [p.node_id for p in chosen if isinstance(p, Placement)] == ["a", "b", "a", "b"]


def test_a_single_eligible_node_is_reported_as_the_only_candidate() -> None:
    outcome = Scheduler(registry=build_fleet([N(node_id="a")])).place(
        PlacementRequest(work_unit_id="wu", kind="cpu"), now_ms=NOW_MS
    )
    assert isinstance(outcome, Placement)
    assert outcome.reason == "only_candidate"
    assert outcome.eligible_count == 1


def test_fanout_offers_the_top_k_nodes_in_rank_order() -> None:
    fleet = [N(node_id=f"n{i}", cpu_load=i / 10) for i in range(6)]
    outcome = Scheduler(registry=build_fleet(fleet)).place(
        PlacementRequest(work_unit_id="wu", kind="cpu"), now_ms=NOW_MS, fanout=3
    )
    assert isinstance(outcome, Placement)
    assert outcome.offered_to == ("n0", "n1", "n2")
    assert outcome.node_id == "n0"
    assert outcome.to_payload()["offered_to"] == ["n0", "n1", "n2"]


def test_fanout_beyond_the_eligible_nodes_offers_to_all_of_them() -> None:
    outcome = Scheduler(registry=build_fleet([N(node_id="a"), N(node_id="b")])).place(
        PlacementRequest(work_unit_id="wu", kind="cpu"), now_ms=NOW_MS, fanout=5
    )
    assert isinstance(outcome, Placement)
    assert outcome.offered_to == ("a", "b")


@pytest.mark.parametrize("fanout", [0, 9])
def test_fanout_outside_its_bounds_is_refused(fanout: int) -> None:
    scheduler = Scheduler(registry=build_fleet([N(node_id="a")]))
    with pytest.raises(ValueError, match="fanout"):
        scheduler.place(PlacementRequest(work_unit_id="wu", kind="cpu"), now_ms=NOW_MS, fanout=fanout)


class CountingFilter:
    name = "counting"

    def applies(self, ctx: PlacementContext) -> bool:
        return True

    def __init__(self) -> None:
        self.seen: list[str] = []

    def check(self, node: NodeState, ctx: PlacementContext) -> str | None:
        self.seen.append(node.node_id)
        return None


def test_placement_examines_a_bounded_candidate_set() -> None:
    registry = build_fleet([N(node_id=f"n{i:05d}") for i in range(2_000)])
    counter = CountingFilter()
    config = PlacementConfig(max_feasible=8)
    scheduler = Scheduler(registry=registry, config=config, filters=(*default_filters(config), counter))
    outcome = scheduler.place(PlacementRequest(work_unit_id="wu", kind="cpu"), now_ms=NOW_MS)
    assert isinstance(outcome, Placement)
    assert outcome.eligible_count == len(outcome.ranked) == 8
    assert len(counter.seen) == 8


def test_different_units_examine_different_nodes() -> None:
    registry = build_fleet([N(node_id=f"n{i:05d}") for i in range(1_000)])
    scheduler = Scheduler(registry=registry, config=PlacementConfig(streak_limit=1_000))
    outcomes = [scheduler.place(PlacementRequest(work_unit_id=f"wu-{i}", kind="cpu"), now_ms=NOW_MS) for i in range(50)]
    chosen = {p.node_id for p in outcomes if isinstance(p, Placement)}
    assert len(chosen) > 40  # rotation spreads equal nodes; a full scan would always pick n00000


def test_the_scan_stops_after_max_examined_and_says_so() -> None:
    registry = build_fleet([N(node_id=f"n{i:05d}", version="1.0.0") for i in range(1_000)])
    scheduler = Scheduler(registry=registry, config=PlacementConfig(max_feasible=4, max_examined=50))
    outcome = scheduler.place(
        PlacementRequest(work_unit_id="wu", kind="cpu", min_runtime_version="2.0.0"), now_ms=NOW_MS
    )
    assert isinstance(outcome, Deferral)
    assert dict(outcome.reasons) == {"version": 50, "limit": 950}
    assert outcome.candidates == 1_000


def test_the_preferred_region_is_read_first() -> None:
    fleet = [N(node_id=f"eu{i:03d}", region="eu") for i in range(100)]
    fleet += [N(node_id=f"us{i:03d}", region="us") for i in range(100)]
    scheduler = Scheduler(registry=build_fleet(fleet), config=PlacementConfig(max_feasible=8))
    outcome = scheduler.place(PlacementRequest(work_unit_id="wu", kind="cpu", region="us"), now_ms=NOW_MS)
    assert isinstance(outcome, Placement)
    assert all(c.node_id.startswith("us") for c in outcome.ranked)


def test_a_deferral_accounts_for_every_node() -> None:
    registry = build_fleet(random_fleet(5, 400))
    outcome = Scheduler(registry=registry).place(
        PlacementRequest(work_unit_id="wu", kind="llm_pod", region="ap", region_required=True,
                         min_runtime_version="3.0.0"),
        now_ms=NOW_MS,
    )
    assert isinstance(outcome, Deferral)
    assert sum(outcome.reasons.values()) == outcome.candidates == 400
    assert set(outcome.reasons) <= {"kind", "region", "version", "capacity", "node_state", "limit"}
    assert outcome.to_payload() == {
        "attempt": 1,
        "round": 1,
        "reasons": dict(sorted(outcome.reasons.items())),
        "candidates": 400,
    }
    assert outcome.details["version"].endswith("is below 3.0.0")


def test_the_scheduled_payload_carries_decimal_strings() -> None:
    registry = build_fleet([N(node_id="a", reserved=1, cpu_load=0.123456789), N(node_id="b", reserved=2)])
    outcome = Scheduler(registry=registry).place(
        PlacementRequest(work_unit_id="wu", kind="cpu", attempt=2, round=3, region="eu"),
        now_ms=NOW_MS,
        trust=TrustView(scores={"a": 0.8}),
    )
    assert isinstance(outcome, Placement)
    payload = outcome.to_payload()
    assert payload == {
        "attempt": 2,
        "round": 3,
        "node_id": "a",
        "offered_to": ["a"],
        "score": "0.787500",  # 0.35·0.75 + 0.30·0.75 + 0.25·0.8 + 0.10·1
        "components": {"capacity": "0.750000", "load": "0.750000", "trust": "0.800000", "region": "1.000000"},
        "penalty": "0.000000",
        "eligible": 2,
        "reason": "best_score",
    }
    assert outcome.idempotency_key == "schedule:wu:2:3"
    assert all(DECIMAL_6.match(v) for v in payload["components"].values())  # type: ignore[union-attr]


def test_a_stale_node_shows_its_penalty_in_the_payload() -> None:
    registry = build_fleet([N(node_id="a", beat_ms=0)])
    outcome = Scheduler(registry=registry).place(PlacementRequest(work_unit_id="wu", kind="cpu"), now_ms=15_001)
    assert isinstance(outcome, Placement)
    assert outcome.to_payload()["penalty"] == "0.150000"
    assert outcome.score == "0.725000"


def test_weights_that_do_not_sum_to_one_are_refused_at_construction() -> None:
    with pytest.raises(ValueError, match=r"must sum to 1, got 0\.95"):
        ScoreWeights(capacity=0.35, load=0.30, trust=0.20, region=0.10)


def test_custom_weights_change_the_choice() -> None:
    fleet = [N(node_id="a", region="us"), N(node_id="b", region="eu", cpu_load=0.2)]
    request = PlacementRequest(work_unit_id="wu", kind="cpu", region="eu")
    default = Scheduler(registry=build_fleet(fleet)).place(request, now_ms=NOW_MS)
    weights = ScoreWeights(capacity=0.4, load=0.4, trust=0.2, region=0.0)
    custom = Scheduler(registry=build_fleet(fleet), config=PlacementConfig(weights=weights)).place(
        request, now_ms=NOW_MS
    )
    assert isinstance(default, Placement) and isinstance(custom, Placement)
    assert (default.node_id, custom.node_id) == ("b", "a")


def test_a_half_open_breaker_gets_one_probe_then_is_skipped() -> None:
    board = BreakerBoard(config=BreakerConfig(min_attempts=1))
    board.record("a", "EXECUTION_ERROR", now_ms=0)  # opens
    scheduler = Scheduler(registry=build_fleet([N(node_id="a"), N(node_id="b", cpu_load=0.5)]))
    now_ms = 6_000  # past open_ms: half-open
    first = scheduler.place(PlacementRequest(work_unit_id="wu-1", kind="cpu"), now_ms=now_ms, gate=board)
    second = scheduler.place(PlacementRequest(work_unit_id="wu-2", kind="cpu"), now_ms=now_ms, gate=board)
    assert isinstance(first, Placement) and isinstance(second, Placement)
    assert (first.node_id, second.node_id) == ("a", "b")


def test_a_unit_request_with_a_bad_version_is_refused() -> None:
    with pytest.raises(ValueError, match="not a semantic version"):
        PlacementRequest(work_unit_id="wu", kind="cpu", min_runtime_version="latest")


def test_an_empty_registry_defers_with_no_candidates() -> None:
    outcome = Scheduler(registry=NodeRegistry()).place(PlacementRequest(work_unit_id="wu", kind="cpu"), now_ms=0)
    assert isinstance(outcome, Deferral)
    assert (dict(outcome.reasons), outcome.candidates) == ({}, 0)


def test_an_excluded_node_is_avoided_while_another_fits() -> None:
    scheduler = Scheduler(registry=build_fleet([N(node_id="a"), N(node_id="b", cpu_load=0.5)]))
    outcome = scheduler.place(PlacementRequest(work_unit_id="wu", kind="cpu"), now_ms=NOW_MS, exclude=frozenset({"a"}))
    assert isinstance(outcome, Placement)
    assert (outcome.node_id, outcome.reason) == ("b", "only_candidate")


def test_an_excluded_node_is_used_when_nothing_else_fits() -> None:
    scheduler = Scheduler(registry=build_fleet([N(node_id="a"), N(node_id="b", draining=True)]))
    outcome = scheduler.place(PlacementRequest(work_unit_id="wu", kind="cpu"), now_ms=NOW_MS, exclude=frozenset({"a"}))
    assert isinstance(outcome, Placement)
    assert (outcome.node_id, outcome.reason) == ("a", "excluded_fallback")


def test_a_deferred_unit_is_placed_once_a_node_of_its_kind_joins() -> None:
    registry = build_fleet([N(node_id="cpu-1")])
    scheduler = Scheduler(registry=registry)
    request = PlacementRequest(work_unit_id="wu", kind="llm_pod")
    assert isinstance(scheduler.place(request, now_ms=NOW_MS), Deferral)
    registry.take_freed_kinds()
    build_fleet([N(node_id="llm-1", kinds=("llm_pod",))], registry)
    assert "llm_pod" in registry.take_freed_kinds()  # the daemon's cue to retry its deferred llm_pod units
    retried = scheduler.place(PlacementRequest(work_unit_id="wu", kind="llm_pod", round=2), now_ms=NOW_MS)
    assert isinstance(retried, Placement) and retried.node_id == "llm-1"


def test_no_placement_ever_breaks_a_hard_constraint() -> None:
    """Spec invariant 7 and the hard filters, over many random fleets and units."""
    rng = random.Random(42)
    for fleet_seed in range(5):
        fleet = random_fleet(fleet_seed, 150)
        fleet = [
            N(**{**spec.__dict__, "draining": rng.random() < 0.1, "disabled": rng.random() < 0.05})
            for spec in fleet
        ]
        registry = build_fleet(fleet)
        trust = TrustView(scores={spec.node_id: rng.random() for spec in fleet if rng.random() < 0.5},
                          quarantined=frozenset(spec.node_id for spec in fleet if rng.random() < 0.05))
        scheduler = Scheduler(registry=registry)
        for index in range(200):
            request = PlacementRequest(
                work_unit_id=f"wu-{fleet_seed}-{index}",
                kind=rng.choice(["cpu", "llm_pod"]),
                region=rng.choice(["eu", "us", "ap", ""]) or "eu",
                region_required=rng.random() < 0.3,
                min_runtime_version=rng.choice(["", "1.2.0", "2.0.0"]),
                privacy=rng.choice(["", "local_only"]),
            )
            outcome = scheduler.place(request, now_ms=NOW_MS, trust=trust, fanout=rng.randint(1, 3))
            if isinstance(outcome, Deferral):
                assert sum(outcome.reasons.values()) == outcome.candidates
                continue
            for node_id in outcome.offered_to:
                node = registry[node_id]
                assert request.kind in node.kinds
                assert node.connected and not node.draining and not node.disabled
                assert node.available_slots >= 1
                assert node_id not in trust.quarantined and trust.score(node_id) >= 0.2
                assert not request.region_required or node.region == request.region
                assert request.min_version_key is None or (node.version_key or (0,)) >= request.min_version_key
                if request.privacy == "local_only":
                    assert "cpu" in node.kinds and trust.score(node_id) >= 0.5
            registry.reserve_slot(outcome.node_id)
