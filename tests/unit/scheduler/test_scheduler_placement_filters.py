"""Placement decisions, one sentence per case: filters first, then scores and ties."""

from __future__ import annotations

import pytest
from scheduler_fleet import N, build_fleet

from krakod.scheduler import Deferral, Placement, PlacementRequest, Scheduler, TrustView

NOW_MS = 10_000


class ClosedCircuits:
    def __init__(self, *closed: str) -> None:
        self.closed = set(closed)
        self.dispatched_to: list[str] = []

    def allows(self, node_id: str, now_ms: int) -> bool:
        return node_id not in self.closed

    def dispatched(self, node_id: str, now_ms: int) -> None:
        self.dispatched_to.append(node_id)


CPU = {"kind": "cpu"}
LLM = {"kind": "llm_pod"}

CASES = [
    # -- hard filters ------------------------------------------------------------------
    pytest.param([N(node_id="a", draining=True), N(node_id="b", cpu_load=0.5)], CPU, None, None, "b",
                 id="a draining node is never chosen"),
    pytest.param([N(node_id="a", disabled=True), N(node_id="b", cpu_load=0.5)], CPU, None, None, "b",
                 id="a disabled node is never chosen"),
    pytest.param([N(node_id="a", down=True), N(node_id="b", cpu_load=0.5)], CPU, None, None, "b",
                 id="a disconnected node is never chosen"),
    pytest.param([N(node_id="a", draining=True)], CPU, None, None, {"node_state": 1},
                 id="a fleet of drained nodes defers the unit"),
    pytest.param([N(node_id="a", kinds=("cpu",))], LLM, None, None, {"kind": 1},
                 id="an llm_pod unit never goes to a CPU-only node"),
    pytest.param([N(node_id="a", kinds=("llm_pod",)), N(node_id="b", cpu_load=0.9)], CPU, None, None, "b",
                 id="a cpu unit never goes to an LLM-only node"),
    pytest.param([N(node_id="a", concurrency=2, reserved=2), N(node_id="b", cpu_load=0.9)], CPU, None, None, "b",
                 id="a full node is never chosen"),
    pytest.param([N(node_id="a", concurrency=1, reserved=1)], CPU, None, None, {"capacity": 1},
                 id="a full fleet defers the unit for capacity"),
    pytest.param([N(node_id="a", version="1.2.9"), N(node_id="b", version="1.3.0", cpu_load=0.9)],
                 {**CPU, "min_runtime_version": "1.3.0"}, None, None, "b",
                 id="a node below the minimum runtime version is never chosen"),
    pytest.param([N(node_id="a", version="1.3.0-rc.1")], {**CPU, "min_runtime_version": "1.3.0"}, None, None,
                 {"version": 1}, id="a prerelease of the minimum version is too old"),
    pytest.param([N(node_id="a", version="dev")], {**CPU, "min_runtime_version": "0.1"}, None, None,
                 {"version": 1}, id="a node whose version is not semver fails any version constraint"),
    pytest.param([N(node_id="a", version="dev")], CPU, None, None, "a",
                 id="a node whose version is not semver still runs unconstrained units"),
    pytest.param([N(node_id="a", region="us"), N(node_id="b", region="eu", cpu_load=0.9)],
                 {**CPU, "region": "eu", "region_required": True}, None, None, "b",
                 id="a required region excludes every other region"),
    pytest.param([N(node_id="a", region="us")], {**CPU, "region": "eu", "region_required": True}, None, None,
                 {"region": 1}, id="a required region with no node there defers the unit"),
    pytest.param([N(node_id="a", region="us")], {**CPU, "region": "eu"}, None, None, "a",
                 id="a preferred region is not a requirement"),
    pytest.param([N(node_id="a", region="us"), N(node_id="b", region="eu")], {**CPU, "region": "eu"}, None, None,
                 "b", id="the preferred region wins between equal nodes"),
    pytest.param([N(node_id="a"), N(node_id="b", cpu_load=0.9)], CPU, TrustView(quarantined=frozenset({"a"})), None,
                 "b", id="a quarantined node is never chosen"),
    pytest.param([N(node_id="a"), N(node_id="b", cpu_load=0.9)], CPU, TrustView(scores={"a": 0.1}), None, "b",
                 id="a node suspended for low trust is never chosen"),
    pytest.param([N(node_id="a", kinds=("llm_pod",), tiers=("small",)),
                  N(node_id="b", kinds=("llm_pod",), tiers=("small", "large"), cpu_load=0.9)],
                 {**LLM, "llm_tier": "large"}, None, None, "b", id="an llm unit goes where its tier is served"),
    pytest.param([N(node_id="a", kinds=("llm_pod",), models=("m1",)),
                  N(node_id="b", kinds=("llm_pod",), models=("m2",), cpu_load=0.9)],
                 {**LLM, "llm_model": "m2"}, None, None, "b", id="an llm unit goes where its model is served"),
    pytest.param([N(node_id="a", kinds=("llm_pod",)), N(node_id="b", kinds=("cpu", "llm_pod"), cpu_load=0.9)],
                 {**LLM, "privacy": "local_only"}, None, None, "b",
                 id="a local_only unit never goes to an LLM-pod-only node"),
    pytest.param([N(node_id="a"), N(node_id="b", cpu_load=0.9)], {**CPU, "privacy": "local_only"},
                 TrustView(scores={"a": 0.4}), None, "b", id="a local_only unit never goes to an untrusted node"),
    pytest.param([N(node_id="a")], {**CPU, "privacy": "local_only"}, TrustView(scores={"a": 0.3}), None,
                 {"privacy": 1}, id="a local_only unit with only untrusted nodes is deferred"),
    pytest.param([N(node_id="a", handlers=("resize",)), N(node_id="b", handlers=("echo",), cpu_load=0.9)],
                 {**CPU, "handler": "echo"}, None, None, "b", id="a cpu unit goes where its handler is"),
    pytest.param([N(node_id="a")], {**CPU, "handler": "echo"}, None, None, "a",
                 id="a node that lists no handlers may run any handler"),
    pytest.param([N(node_id="a"), N(node_id="b", cpu_load=0.9)], CPU, None, ClosedCircuits("a"), "b",
                 id="a node with an open circuit breaker is never chosen"),
    pytest.param([N(node_id="a", draining=True), N(node_id="b", kinds=("llm_pod",)),
                  N(node_id="c", concurrency=1, reserved=1), N(node_id="d", version="0.9.0")],
                 {**CPU, "min_runtime_version": "1.0.0"}, None, None,
                 {"node_state": 1, "kind": 1, "capacity": 1, "version": 1},
                 id="when nothing fits the deferral counts each reason once per node"),
    # -- scores and ties ----------------------------------------------------------------
    pytest.param([N(node_id="a", reserved=3), N(node_id="b", reserved=1)], CPU, None, None, "b",
                 id="the node with more headroom wins"),
    pytest.param([N(node_id="a", cpu_load=0.7), N(node_id="b", cpu_load=0.2)], CPU, None, None, "b",
                 id="the less loaded node wins"),
    pytest.param([N(node_id="a"), N(node_id="b")], CPU, TrustView(scores={"a": 0.6, "b": 0.9}), None, "b",
                 id="the more trusted node wins"),
    pytest.param([N(node_id="a"), N(node_id="b")], CPU, TrustView(scores={"b": 0.4}), None, "a",
                 id="a node without a trust score counts as 0.5"),
    pytest.param([N(node_id="a", queue_depth=3), N(node_id="b", queue_depth=1)], CPU, None, None, "b",
                 id="equal scores go to the shorter queue"),
    pytest.param([N(node_id="b"), N(node_id="a")], CPU, None, None, "a",
                 id="equal scores and queues go to the smallest node id"),
    pytest.param([N(node_id="a", beat_ms=0), N(node_id="b", cpu_load=0.3)], {**CPU}, None, None, "b",
                 id="health older than 15 s costs the uncertainty penalty"),
]


@pytest.mark.parametrize(("fleet", "unit", "trust", "gate", "expected"), CASES)
def test_placement(
    fleet: list[N], unit: dict[str, object], trust: TrustView | None, gate: ClosedCircuits | None, expected: object
) -> None:
    scheduler = Scheduler(registry=build_fleet(fleet))
    now_ms = 20_000 if any(spec.beat_ms == 0 for spec in fleet) else NOW_MS
    outcome = scheduler.place(PlacementRequest(work_unit_id="wu-1", **unit), now_ms=now_ms, trust=trust, gate=gate)
    if isinstance(expected, str):
        assert isinstance(outcome, Placement), outcome
        assert outcome.node_id == expected
    else:
        assert isinstance(outcome, Deferral), outcome
        assert dict(outcome.reasons) == expected
        assert sum(outcome.reasons.values()) == outcome.candidates == len(fleet)
