"""Node registry: health classification, the heartbeat sampling bound, expiry, drain,
slots and the (kind, region) index."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scheduler_fleet import N, hello

from krakod.scheduler import (
    ALL_REGIONS,
    HealthStatus,
    HealthThresholds,
    Measurements,
    NodeHello,
    NodeRegistry,
    RegistryConfig,
)
from krakod.scheduler.health import classify

MIB = 1024 * 1024


@pytest.mark.parametrize(
    ("measured", "expected"),
    [
        pytest.param(Measurements(), HealthStatus.HEALTHY, id="an idle node is healthy"),
        pytest.param(Measurements(utilization=1.0, in_flight=4), HealthStatus.HEALTHY, id="a full node is healthy"),
        pytest.param(Measurements(cpu_load=0.85), HealthStatus.DEGRADED, id="cpu load from 0.85 is degraded"),
        pytest.param(Measurements(utilization=1.2), HealthStatus.DEGRADED, id="an over-committed node is degraded"),
        pytest.param(Measurements(queue_depth=50), HealthStatus.DEGRADED, id="a local backlog of 50 is degraded"),
        pytest.param(Measurements(memory_available_bytes=200 * MIB), HealthStatus.DEGRADED,
                     id="less than 256 MiB free memory is degraded"),
        pytest.param(Measurements(cpu_load=1.5), HealthStatus.UNHEALTHY, id="cpu load from 1.5 is unhealthy"),
        pytest.param(Measurements(memory_available_bytes=10 * MIB), HealthStatus.UNHEALTHY,
                     id="less than 64 MiB free memory is unhealthy"),
        pytest.param(Measurements(memory_available_bytes=None), HealthStatus.HEALTHY,
                     id="unreported memory is ignored"),
    ],
)
def test_health_classification(measured: Measurements, expected: HealthStatus) -> None:
    assert classify(measured, HealthThresholds()) is expected


def registry_with(*specs: N) -> NodeRegistry:
    registry = NodeRegistry()
    for spec in specs:
        registry.register(hello(spec), now_ms=0)
    return registry


def test_hello_returns_the_registered_payload() -> None:
    payload = NodeRegistry().register(hello(N(node_id="a", kinds=("llm_pod", "cpu"))), now_ms=0)
    assert payload["kinds"] == ["cpu", "llm_pod"]
    assert payload["connection_id"] == "conn-a"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        pytest.param({"node_id": ""}, "node_id", id="a hello without a node id is refused"),
        pytest.param({"region": ""}, "region", id="a hello without a region is refused"),
        pytest.param({"kinds": frozenset()}, "kinds", id="a hello without kinds is refused"),
        pytest.param({"concurrency": 0}, "concurrency", id="a hello with no concurrency is refused"),
    ],
)
def test_bad_hellos_are_refused(fields: dict[str, object], message: str) -> None:
    base: dict[str, object] = {"node_id": "a", "region": "eu", "kinds": frozenset({"cpu"}), "concurrency": 1,
                               "version": "1.0.0"}
    with pytest.raises(ValueError, match=message):
        NodeHello(**{**base, **fields})  # type: ignore[arg-type]


def test_a_heartbeat_from_an_unknown_node_is_an_error() -> None:
    with pytest.raises(KeyError, match="hello first"):
        NodeRegistry().heartbeat("ghost", Measurements(), now_ms=0)


def test_the_first_heartbeat_is_sampled_then_quiet_until_the_interval() -> None:
    registry = registry_with(N(node_id="a"))
    first = registry.heartbeat("a", Measurements(cpu_load=0.1), now_ms=1_000)
    assert first is not None and first["reason"] == "sample"
    assert registry.heartbeat("a", Measurements(cpu_load=0.2), now_ms=30_000) is None
    later = registry.heartbeat("a", Measurements(cpu_load=0.2), now_ms=61_000)
    assert later is not None and later["reason"] == "sample"


def test_a_health_transition_is_written_with_its_reason() -> None:
    registry = registry_with(N(node_id="a"))
    registry.heartbeat("a", Measurements(), now_ms=0)
    event = registry.heartbeat("a", Measurements(cpu_load=2.0), now_ms=6_000)
    assert event == {
        "node_id": "a",
        "health": "unhealthy",
        "cpu_load": 2.0,
        "utilization": 0.0,
        "in_flight": 0,
        "queue_depth": 0,
        "memory_available_bytes": None,
        "reason": "transition",
    }


def test_a_band_change_is_held_back_until_the_minimum_interval_then_written() -> None:
    registry = registry_with(N(node_id="a"))
    registry.heartbeat("a", Measurements(utilization=0.1), now_ms=0)
    assert registry.heartbeat("a", Measurements(utilization=0.6), now_ms=1_000) is None
    assert registry.heartbeat("a", Measurements(utilization=0.6), now_ms=3_000) is None
    event = registry.heartbeat("a", Measurements(utilization=0.6), now_ms=5_000)
    assert event is not None and event["reason"] == "band"


def test_a_change_that_reverts_before_the_interval_writes_nothing() -> None:
    registry = registry_with(N(node_id="a"))
    registry.heartbeat("a", Measurements(), now_ms=0)
    assert registry.heartbeat("a", Measurements(cpu_load=2.0), now_ms=1_000) is None
    assert registry.heartbeat("a", Measurements(), now_ms=6_000) is None


def test_heartbeats_of_one_hour_stay_within_the_documented_bound() -> None:
    config = RegistryConfig()
    registry = NodeRegistry(config=config)
    registry.register(hello(N(node_id="flappy")), now_ms=0)
    registry.register(hello(N(node_id="steady")), now_ms=0)
    flappy = steady = 0
    for second in range(3_600):
        now_ms = second * 1_000
        wild = Measurements(cpu_load=2.0 if second % 2 else 0.0, utilization=(second % 5) / 4)
        flappy += registry.heartbeat("flappy", wild, now_ms=now_ms) is not None
        steady += registry.heartbeat("steady", Measurements(cpu_load=0.1), now_ms=now_ms) is not None
    assert config.max_health_events_per_node_hour == 720
    assert flappy <= config.max_health_events_per_node_hour + 1
    assert steady == 60  # the first beat, then one sample a minute


def test_nodes_whose_heartbeats_stop_expire_once() -> None:
    registry = registry_with(N(node_id="a"), N(node_id="b"), N(node_id="c"))
    registry.heartbeat("a", Measurements(), now_ms=9_000)
    registry.heartbeat("b", Measurements(), now_ms=2_000)
    assert registry.expired(now_ms=10_000, ttl_ms=5_000) == ["b", "c"]
    assert registry.mark_unavailable("b") and registry.mark_unavailable("c")
    assert registry.expired(now_ms=10_000, ttl_ms=5_000) == []
    assert registry["b"].health is HealthStatus.DOWN
    assert registry.free_nodes("cpu") == ["a"]


def test_a_heartbeat_revives_a_node_marked_down() -> None:
    registry = registry_with(N(node_id="a"))
    registry.mark_unavailable("a")
    event = registry.heartbeat("a", Measurements(), now_ms=20_000)
    assert event is not None and event["health"] == "healthy"
    assert registry.free_nodes("cpu") == ["a"]


def test_a_stale_stream_closing_does_not_take_down_its_replacement() -> None:
    registry = registry_with(N(node_id="a"))
    assert not registry.disconnect("a", connection_id="an-older-stream")
    assert registry["a"].connected
    assert registry.disconnect("a", connection_id="conn-a")
    assert not registry.disconnect("a", connection_id="conn-a")


def test_a_drained_node_leaves_the_index_and_reports_draining() -> None:
    registry = registry_with(N(node_id="a"), N(node_id="b"))
    assert registry.drain("a") and not registry.drain("a")
    assert registry["a"].health is HealthStatus.DRAINING
    assert registry.free_nodes("cpu", "eu") == ["b"]
    assert registry.excluded("cpu", "eu") == {"node_state": 1}
    event = registry.heartbeat("a", Measurements(), now_ms=1_000)
    assert event is not None and event["health"] == "draining"
    assert registry.undrain("a")
    assert registry.free_nodes("cpu", "eu") == ["a", "b"]


def test_a_reconnect_keeps_reservations_and_the_drain() -> None:
    registry = registry_with(N(node_id="a", concurrency=2))
    registry.reserve_slot("a")
    registry.drain("a")
    registry.register(hello(N(node_id="a", concurrency=2)), now_ms=5_000)
    node = registry["a"]
    assert (node.reserved, node.draining, node.available_slots) == (1, True, 1)
    assert registry.health_counts()[HealthStatus.DRAINING] == 1
    assert sum(registry.health_counts().values()) == 1


def test_slots_move_a_node_in_and_out_of_the_index() -> None:
    registry = registry_with(N(node_id="a", concurrency=2, kinds=("cpu", "llm_pod")))
    registry.take_freed_kinds()
    assert registry.reserve_slot("a") == 1
    assert registry.reserve_slot("a") == 0
    assert registry.free_nodes("cpu") == [] and registry.free_nodes("llm_pod", "eu") == []
    assert registry.excluded("cpu") == {"capacity": 1}
    assert registry.take_freed_kinds() == frozenset()
    assert registry.release_slot("a")
    assert registry.free_nodes("cpu") == ["a"]
    assert registry.take_freed_kinds() == frozenset({"cpu", "llm_pod"})
    assert registry.release_slot("a") and not registry.release_slot("a")


def test_the_agents_own_in_flight_count_also_uses_slots() -> None:
    registry = registry_with(N(node_id="a", concurrency=2))
    registry.heartbeat("a", Measurements(in_flight=2, utilization=1.0), now_ms=1_000)
    assert registry["a"].available_slots == 0
    assert registry.free_nodes("cpu") == []


def test_unhealthy_fraction_counts_connected_nodes_only() -> None:
    registry = registry_with(N(node_id="a"), N(node_id="b"), N(node_id="c"), N(node_id="d"))
    registry.heartbeat("a", Measurements(cpu_load=3.0), now_ms=0)
    registry.disconnect("d")
    assert registry.unhealthy_fraction() == pytest.approx(1 / 3)


def test_a_bad_version_is_accepted_but_unparsed() -> None:
    registry = registry_with(N(node_id="a", version="nightly"))
    assert registry["a"].version_key is None


OPS = st.lists(
    st.tuples(
        st.sampled_from(["reserve", "release", "drain", "undrain", "disable", "enable", "down", "beat", "hello"]),
        st.integers(min_value=0, max_value=5),
        st.integers(min_value=0, max_value=3),
    ),
    max_size=60,
)


@settings(max_examples=100, deadline=None)
@given(OPS)
def test_the_index_always_matches_a_full_scan(ops: list[tuple[str, int, int]]) -> None:
    regions, kinds = ["eu", "us"], [("cpu",), ("llm_pod",), ("cpu", "llm_pod")]
    registry = NodeRegistry()
    for i in range(6):
        registry.register(hello(N(node_id=f"n{i}", region=regions[i % 2], kinds=kinds[i % 3], concurrency=2)),
                          now_ms=0)
    for op, index, value in ops:
        node_id = f"n{index}"
        if op == "reserve":
            registry.reserve_slot(node_id)
        elif op == "release":
            registry.release_slot(node_id)
        elif op in ("drain", "undrain"):
            (registry.drain if op == "drain" else registry.undrain)(node_id)
        elif op in ("disable", "enable"):
            registry.set_disabled(node_id, op == "disable")
        elif op == "down":
            registry.disconnect(node_id)
        elif op == "beat":
            registry.heartbeat(node_id, Measurements(in_flight=value % 3, cpu_load=value / 2), now_ms=1_000)
        else:
            registry.register(hello(N(node_id=node_id, region=regions[value % 2], kinds=kinds[value % 3],
                                      concurrency=2)), now_ms=2_000)
    for kind in ("cpu", "llm_pod"):
        for region in ("eu", "us", ALL_REGIONS):
            expected = sorted(
                n.node_id
                for n in registry.nodes()
                if kind in n.kinds
                and region in (n.region, ALL_REGIONS)
                and n.connected
                and not n.draining
                and not n.disabled
                and n.available_slots > 0
            )
            assert registry.free_nodes(kind, region) == expected
            population = sum(1 for n in registry.nodes() if kind in n.kinds and region in (n.region, ALL_REGIONS))
            assert registry.population(kind, region) == population
            assert sum(registry.excluded(kind, region).values()) == population - len(expected)
    assert sum(registry.health_counts().values()) == len(registry)
    assert registry.health_counts() == {
        status: sum(1 for n in registry.nodes() if n.health is status) for status in HealthStatus
    }
