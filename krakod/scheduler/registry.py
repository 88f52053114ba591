"""Live state of every node, from hello and heartbeats, with a placement index.

The registry is a cache the daemon keeps beside the log: it never appends anything
itself. Methods that correspond to an event return that event's payload (or None when
nothing is to be written) and the daemon appends it.

Log growth from heartbeats (`node.health.updated`) is bounded per node by
`RegistryConfig`: one event on the first heartbeat of a connection, then one when the
health status or a metric band differs from the last *written* one, but never more often
than every `change_min_interval_ms` (5 s), and otherwise one sample every
`sample_interval_ms` (60 s). A change that is held back is written when the interval
allows, because the comparison is against the last written state, not the previous beat.
So a steady node writes 60 events per hour and a pathologically flapping one at most
3600 / 5 = 720 per hour, plus one per reconnection (`max_health_events_per_node_hour`).

The index: nodes that can take work now (connected, not disabled, not draining, at least
one free slot) are kept per (kind, region) and per (kind, all regions) in sorted id order,
so a placement reads only the nodes of the unit's kind and region, starting at a
deterministic offset, and never scans the whole fleet. Excluded nodes are counted per
bucket and reason, so a deferral can still say why nothing fit.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from krakod.scheduler._version import VersionKey, parse_version
from krakod.scheduler.health import HealthStatus, HealthThresholds, Measurements, MetricBands, bands_of, classify

__all__ = ["ALL_REGIONS", "NodeHello", "NodeRegistry", "NodeState", "RegistryConfig"]

ALL_REGIONS = "*"

# Why a node is not in the free index; the names match placement filter names so a
# deferral can merge these counts with the ones of the filters.
EXCLUDED_STATE = "node_state"
EXCLUDED_CAPACITY = "capacity"


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeHello:
    """The static facts of a node, from krako.v1.Hello (and the stream's connection id)."""

    node_id: str
    region: str
    kinds: frozenset[str]
    concurrency: int
    version: str
    handlers: frozenset[str] = frozenset()
    llm_tiers: frozenset[str] = frozenset()
    llm_models: frozenset[str] = frozenset()
    llm_max_concurrency: int = 0
    llm_provider: str = ""
    stability_class: str = "community"
    connection_id: str = ""

    def __post_init__(self) -> None:
        for name in ("kinds", "handlers", "llm_tiers", "llm_models"):
            object.__setattr__(self, name, frozenset(getattr(self, name)))
        if not self.node_id:
            raise ValueError("hello: node_id must not be empty")
        if not self.region or self.region == ALL_REGIONS:
            raise ValueError(f"hello: region must be a name, got {self.region!r}")
        if not self.kinds or "" in self.kinds:
            raise ValueError("hello: kinds must name at least one kind (cpu, llm_pod)")
        if self.concurrency < 1:
            raise ValueError(f"hello: concurrency must be at least 1, got {self.concurrency}")


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistryConfig:
    thresholds: HealthThresholds = field(default_factory=HealthThresholds)
    bands: MetricBands = field(default_factory=MetricBands)
    sample_interval_ms: int = 60_000
    change_min_interval_ms: int = 5_000

    def __post_init__(self) -> None:
        if not 0 < self.change_min_interval_ms <= self.sample_interval_ms:
            raise ValueError("registry config needs 0 < change_min_interval_ms <= sample_interval_ms")

    @property
    def max_health_events_per_node_hour(self) -> int:
        """Upper bound of node.health.updated per node per hour, excluding reconnections."""
        return -(-3_600_000 // self.change_min_interval_ms)


@dataclass(slots=True, kw_only=True)
class _Written:
    health: HealthStatus
    bands: tuple[int, int, int]
    at_ms: int


@dataclass(slots=True, kw_only=True)
class NodeState:
    """One node as the registry knows it. Owned by the registry: read it, do not mutate it."""

    hello: NodeHello
    version_key: VersionKey | None
    connected: bool = True
    disabled: bool = False
    draining: bool = False
    reserved: int = 0  # offers and claims the daemon made to this node and not yet released
    measured: Measurements = field(default_factory=Measurements)
    bands: tuple[int, int, int] = (0, 0, 0)
    health: HealthStatus = HealthStatus.HEALTHY
    registered_ms: int = 0
    last_heartbeat_ms: int = 0
    index_reason: str | None = None
    written: _Written | None = None

    @property
    def node_id(self) -> str:
        return self.hello.node_id

    @property
    def region(self) -> str:
        return self.hello.region

    @property
    def kinds(self) -> frozenset[str]:
        return self.hello.kinds

    @property
    def concurrency(self) -> int:
        return self.hello.concurrency

    @property
    def in_flight(self) -> int:
        """The larger of the daemon's count and the agent's own report (either may lag)."""
        reserved, reported = self.reserved, self.measured.in_flight
        return reserved if reserved > reported else reported

    @property
    def available_slots(self) -> int:
        free = self.hello.concurrency - self.in_flight
        return free if free > 0 else 0  # no max(): this is on placement's hot path

    def heartbeat_age_ms(self, now_ms: int) -> int:
        return max(0, now_ms - self.last_heartbeat_ms)


class NodeRegistry:
    """Node state keyed by node id, and the (kind, region) index placements read."""

    def __init__(self, *, config: RegistryConfig | None = None) -> None:
        self.config = config or RegistryConfig()
        self._nodes: dict[str, NodeState] = {}
        self._free: dict[tuple[str, str], list[NodeState]] = {}  # sorted by node id
        self._population: Counter[tuple[str, str]] = Counter()
        self._excluded: dict[tuple[str, str], Counter[str]] = {}
        self._health_counts: Counter[HealthStatus] = Counter()
        self._freed_kinds: set[str] = set()

    # -- lifecycle -------------------------------------------------------------------

    def register(self, hello: NodeHello, *, now_ms: int) -> dict[str, object]:
        """Hello: add or replace a node; returns the node.registered payload.

        A re-hello (reconnect, or a second stream replacing the first) keeps the
        daemon's reserved slots and the operator's drain/disable flags.
        """
        try:
            version_key: VersionKey | None = parse_version(hello.version)
        except ValueError:
            version_key = None  # fails every min_runtime_version constraint, runs the rest
        previous = self._nodes.get(hello.node_id)
        node = NodeState(hello=hello, version_key=version_key, registered_ms=now_ms, last_heartbeat_ms=now_ms)
        if previous is not None:
            node.reserved, node.disabled, node.draining = previous.reserved, previous.disabled, previous.draining
            self._unindex(previous)
        self._nodes[hello.node_id] = node
        node.health = self._health_of(node)
        self._index(node)
        return {
            "node_id": hello.node_id,
            "region": hello.region,
            "kinds": sorted(hello.kinds),
            "concurrency": hello.concurrency,
            "version": hello.version,
            "handlers": sorted(hello.handlers),
            "llm_tiers": sorted(hello.llm_tiers),
            "llm_models": sorted(hello.llm_models),
            "llm_max_concurrency": hello.llm_max_concurrency,
            "llm_provider": hello.llm_provider,
            "stability_class": hello.stability_class,
            "connection_id": hello.connection_id,
        }

    def heartbeat(self, node_id: str, measured: Measurements, *, now_ms: int) -> dict[str, object] | None:
        """Record a heartbeat; returns a node.health.updated payload when one is due, else None.

        A heartbeat from a node marked down (TTL) revives it; the transition is logged.
        """
        node = self._require(node_id)
        node.measured = measured
        node.last_heartbeat_ms = now_ms
        node.connected = True
        node.bands = bands_of(measured, self.config.bands)
        self._refresh(node)
        return self._health_event(node, now_ms)

    def disconnect(self, node_id: str, *, connection_id: str | None = None) -> bool:
        """The node's stream closed. True when the node went down (append node.unavailable).

        With `connection_id`, a stale stream closing after a newer one replaced it is ignored.
        """
        node = self._nodes.get(node_id)
        if node is None or not node.connected:
            return False
        if connection_id is not None and connection_id != node.hello.connection_id:
            return False
        node.connected = False
        self._refresh(node)
        return True

    def expired(self, *, now_ms: int, ttl_ms: int) -> list[str]:
        """Connected nodes whose last heartbeat is older than `ttl_ms`, sorted by id.

        A timer-tick query: append node.unavailable{reason: heartbeat_ttl} for each, then
        call `mark_unavailable`, after which the node is no longer listed.
        """
        cutoff = now_ms - ttl_ms
        return sorted(n.node_id for n in self._nodes.values() if n.connected and n.last_heartbeat_ms < cutoff)

    def mark_unavailable(self, node_id: str) -> bool:
        """Take a node out of placement (heartbeat TTL); True when it changed."""
        return self.disconnect(node_id)

    def drain(self, node_id: str) -> bool:
        """No new placements; running work finishes. True when it changed."""
        return self._set_flag(node_id, "draining", True)

    def undrain(self, node_id: str) -> bool:
        return self._set_flag(node_id, "draining", False)

    def set_disabled(self, node_id: str, disabled: bool) -> bool:
        return self._set_flag(node_id, "disabled", disabled)

    def remove(self, node_id: str) -> bool:
        """Forget a node entirely (e.g. long gone); True when it was known."""
        node = self._nodes.pop(node_id, None)
        if node is None:
            return False
        self._unindex(node)
        return True

    # -- slots -----------------------------------------------------------------------

    def reserve_slot(self, node_id: str) -> int:
        """Count an offer (or claim) made to the node; returns its available slots after.

        Placement only picks nodes with a free slot, but a reservation is never refused:
        work that is already running (a re-hello's `running`) must be counted.
        """
        node = self._require(node_id)
        node.reserved += 1
        self._refresh(node)
        return node.available_slots

    def release_slot(self, node_id: str) -> bool:
        """An offer was declined or expired, or an attempt ended. False when nothing was reserved."""
        node = self._nodes.get(node_id)
        if node is None or node.reserved == 0:
            return False
        node.reserved -= 1
        self._refresh(node)
        return True

    # -- reads -----------------------------------------------------------------------

    def get(self, node_id: str) -> NodeState | None:
        return self._nodes.get(node_id)

    def __getitem__(self, node_id: str) -> NodeState:
        return self._nodes[node_id]

    def __len__(self) -> int:
        return len(self._nodes)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._nodes

    def nodes(self) -> Iterator[NodeState]:
        """All nodes in node id order."""
        for node_id in sorted(self._nodes):
            yield self._nodes[node_id]

    def health_counts(self) -> dict[HealthStatus, int]:
        return {status: self._health_counts[status] for status in HealthStatus}

    def unhealthy_fraction(self) -> float:
        """Unhealthy nodes over connected nodes (down nodes count in neither); 0 with none."""
        connected = len(self._nodes) - self._health_counts[HealthStatus.DOWN]
        return self._health_counts[HealthStatus.UNHEALTHY] / connected if connected else 0.0

    def take_freed_kinds(self) -> frozenset[str]:
        """Kinds that gained a placeable slot since the last call (to wake deferred units)."""
        freed = frozenset(self._freed_kinds)
        self._freed_kinds.clear()
        return freed

    def free_nodes(self, kind: str, region: str = ALL_REGIONS) -> list[str]:
        """Sorted ids of nodes of `kind` in `region` that can take work now."""
        return [node.node_id for node in self._free.get((kind, region), ())]

    def free_states(self, kind: str, region: str = ALL_REGIONS) -> Sequence[NodeState]:
        """The same nodes, by node id: placement's candidate source. Read only."""
        return self._free.get((kind, region), ())

    def population(self, kind: str, region: str = ALL_REGIONS) -> int:
        """Nodes of `kind` in `region`, whatever their state."""
        return self._population[(kind, region)]

    def excluded(self, kind: str, region: str = ALL_REGIONS) -> dict[str, int]:
        """Why nodes of the bucket are not in the free index: {"node_state"|"capacity": count}."""
        return {k: v for k, v in self._excluded.get((kind, region), Counter()).items() if v}

    # -- internals -------------------------------------------------------------------

    def _require(self, node_id: str) -> NodeState:
        node = self._nodes.get(node_id)
        if node is None:
            raise KeyError(f"unknown node {node_id!r}: it must say hello first")
        return node

    def _set_flag(self, node_id: str, flag: str, value: bool) -> bool:
        node = self._require(node_id)
        if getattr(node, flag) == value:
            return False
        setattr(node, flag, value)
        self._refresh(node)
        return True

    def _health_of(self, node: NodeState) -> HealthStatus:
        if not node.connected:
            return HealthStatus.DOWN
        if node.draining:
            return HealthStatus.DRAINING
        return classify(node.measured, self.config.thresholds)

    def _refresh(self, node: NodeState) -> None:
        health = self._health_of(node)
        if health is not node.health:
            self._health_counts[node.health] -= 1
            self._health_counts[health] += 1
            node.health = health
        reason = _index_reason(node)
        if reason != node.index_reason:
            self._move(node, reason)

    def _keys(self, node: NodeState) -> Iterable[tuple[str, str]]:
        for kind in node.kinds:
            yield (kind, node.region)
            yield (kind, ALL_REGIONS)

    def _index(self, node: NodeState) -> None:
        self._health_counts[node.health] += 1
        for key in self._keys(node):
            self._population[key] += 1
        node.index_reason = "unindexed"
        self._move(node, _index_reason(node))

    def _unindex(self, node: NodeState) -> None:
        self._health_counts[node.health] -= 1
        self._move(node, "unindexed")
        for key in self._keys(node):
            self._population[key] -= 1

    def _move(self, node: NodeState, reason: str | None) -> None:
        old = node.index_reason
        for key in self._keys(node):
            if old is None:
                free = self._free[key]
                del free[bisect_left(free, node.node_id, key=_node_id)]
            elif old != "unindexed":
                self._excluded[key][old] -= 1
            if reason is None:
                insort(self._free.setdefault(key, []), node, key=_node_id)
            elif reason != "unindexed":
                self._excluded.setdefault(key, Counter())[reason] += 1
        if reason is None:
            self._freed_kinds.update(node.kinds)
        node.index_reason = reason

    def _health_event(self, node: NodeState, now_ms: int) -> dict[str, object] | None:
        written = node.written
        if written is None:
            reason = "sample"
        else:
            since_ms = now_ms - written.at_ms
            if node.health is not written.health and since_ms >= self.config.change_min_interval_ms:
                reason = "transition"
            elif node.bands != written.bands and since_ms >= self.config.change_min_interval_ms:
                reason = "band"
            elif since_ms >= self.config.sample_interval_ms:
                reason = "sample"
            else:
                return None
        node.written = _Written(health=node.health, bands=node.bands, at_ms=now_ms)
        measured = node.measured
        return {
            "node_id": node.node_id,
            "health": node.health.value,
            "cpu_load": round(measured.cpu_load, 4),
            "utilization": round(measured.utilization, 4),
            "in_flight": measured.in_flight,
            "queue_depth": measured.queue_depth,
            "memory_available_bytes": measured.memory_available_bytes,
            "reason": reason,
        }


def _node_id(node: NodeState) -> str:
    return node.hello.node_id


def _index_reason(node: NodeState) -> str | None:
    if not node.connected or node.disabled or node.draining:
        return EXCLUDED_STATE
    if node.available_slots < 1:
        return EXCLUDED_CAPACITY
    return None
