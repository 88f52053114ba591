"""Node trust: a pure fold of outcomes and health in the log.

Per node, three signals, all in Decimal with a fixed context (identical on every
machine and every replay):
- reliability r = alpha / (alpha + beta), Beta-Binomial with prior alpha0 = beta0 = 2;
  a completed unit adds 1 to alpha, a failure or a timeout (claim expired, or a
  failure whose error code says timeout) adds 1 to beta;
- timeout EWMA e <- lambda * x + (1 - lambda) * e, x = 1 for a timeout and 0 for any
  other outcome (lambda = 0.2); its penalty is min(e, 0.4);
- health penalty h from the latest `node.health.updated`: healthy 0, degraded 0.2,
  unhealthy or down 0.5 (draining is an operator action, not a fault: 0).

score = clamp(r * (1 - min(e, 0.4)) * (1 - h), 0, 1), quantized to 6 places.
Multiplying keeps each signal's meaning: a perfectly reliable node that is unhealthy
scores 0.5 of itself, and a new node (r = 0.5) is not quarantined by one bad heartbeat.

Decay by event time: when an event of a node is at least one whole hour after the
node's decay anchor, alpha and beta move toward the prior and e toward 0 by
d^hours (d = 0.98), and the anchor advances by those whole hours. Nodes without
events do not decay; the clock is never read.

The projection also folds what was published (`trust.score.updated`,
`node.quarantined`, `node.quarantine.lifted`) so the trust publisher can compare.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from krakod.projections.money import CONTEXT, ONE, ZERO, quantize
from krakod.projections.runner import FOLD_ERRORS, Item, View

HOUR_US = 3_600_000_000
TIMEOUT_MARKERS = ("timeout", "timed_out", "deadline")


@dataclass(frozen=True, slots=True)
class TrustParams:
    alpha0: Decimal = Decimal(2)
    beta0: Decimal = Decimal(2)
    ewma_lambda: Decimal = Decimal("0.2")
    timeout_penalty_cap: Decimal = Decimal("0.4")
    decay_per_hour: Decimal = Decimal("0.98")
    health_penalty: Mapping[str, Decimal] | None = None

    def penalty_of(self, health: str) -> Decimal:
        table = self.health_penalty or _HEALTH_PENALTY
        return table.get(health, ZERO)


_HEALTH_PENALTY = {
    "healthy": ZERO,
    "degraded": Decimal("0.2"),
    "unhealthy": Decimal("0.5"),
    "down": Decimal("0.5"),
    "draining": ZERO,
}
DEFAULT_PARAMS = TrustParams()


@dataclass(frozen=True, slots=True)
class NodeTrust:
    """What the scheduler and the publisher see of one node."""

    node_id: str
    score: Decimal
    alpha: Decimal
    beta: Decimal
    timeout_ewma: Decimal
    health: str
    successes: int
    failures: int
    timeouts: int
    published_score: Decimal | None
    published_count: int
    quarantined: bool
    quarantine_count: int


class _Node:
    __slots__ = (
        "alpha",
        "anchor_us",
        "beta",
        "ewma",
        "failures",
        "health",
        "published_count",
        "published_score",
        "quarantine_count",
        "quarantined",
        "successes",
        "timeouts",
    )

    def __init__(self, params: TrustParams) -> None:
        self.alpha, self.beta, self.ewma = params.alpha0, params.beta0, ZERO
        self.health = "healthy"
        self.anchor_us: int | None = None
        self.successes = self.failures = self.timeouts = 0
        self.published_score: Decimal | None = None
        self.published_count = self.quarantine_count = 0
        self.quarantined = False


def score_of(node: _Node, params: TrustParams) -> Decimal:
    """The combined score of a node's state (see the module docstring)."""
    c = CONTEXT
    reliability = c.divide(node.alpha, c.add(node.alpha, node.beta))
    timeout_penalty = min(node.ewma, params.timeout_penalty_cap)
    score = c.multiply(
        c.multiply(reliability, c.subtract(ONE, timeout_penalty)), c.subtract(ONE, params.penalty_of(node.health))
    )
    return quantize(min(ONE, max(ZERO, score)))


class TrustProjection:
    name = "trust"
    event_types = frozenset(
        {
            "node.registered",
            "node.health.updated",
            "workunit.completed",
            "workunit.failed",
            "workunit.claim.expired",
            "trust.score.updated",
            "node.quarantined",
            "node.quarantine.lifted",
        }
    )
    views: Mapping[str, View] = {"trust": (("trust_nodes", "node_id"), ("trust_errors", "seq"))}

    def __init__(self, params: TrustParams = DEFAULT_PARAMS) -> None:
        self.params = params
        self._nodes: dict[str, _Node] = {}
        self._decay_1h = params.decay_per_hour
        self._keep = CONTEXT.subtract(ONE, params.ewma_lambda)  # 1 - lambda
        self.snapshot: Mapping[str, NodeTrust] = {}

    def create_schema(self, conn: sqlite3.Connection) -> None:
        conn.executescript(
            """
            CREATE TABLE IF NOT EXISTS trust_nodes (
                node_id TEXT PRIMARY KEY, score TEXT NOT NULL, alpha TEXT NOT NULL, beta TEXT NOT NULL,
                timeout_ewma TEXT NOT NULL, health TEXT NOT NULL, anchor_us INTEGER,
                successes INTEGER NOT NULL, failures INTEGER NOT NULL, timeouts INTEGER NOT NULL,
                published_score TEXT, published_count INTEGER NOT NULL,
                quarantined INTEGER NOT NULL, quarantine_count INTEGER NOT NULL
            );
            CREATE TABLE IF NOT EXISTS trust_errors (
                seq INTEGER PRIMARY KEY, event_id TEXT NOT NULL, type TEXT NOT NULL, error TEXT NOT NULL
            );
            """
        )

    def load(self, conn: sqlite3.Connection) -> None:
        self._nodes = {}
        for row in conn.execute(
            "SELECT node_id, alpha, beta, timeout_ewma, health, anchor_us, successes, failures, timeouts, "
            "published_score, published_count, quarantined, quarantine_count FROM trust_nodes"
        ):
            node = _Node(self.params)
            node.alpha, node.beta, node.ewma = Decimal(row[1]), Decimal(row[2]), Decimal(row[3])
            node.health, node.anchor_us = row[4], row[5]
            node.successes, node.failures, node.timeouts = row[6], row[7], row[8]
            node.published_score = None if row[9] is None else Decimal(row[9])
            node.published_count, node.quarantined, node.quarantine_count = row[10], bool(row[11]), row[12]
            self._nodes[row[0]] = node
        self.snapshot = {node_id: self._view(node_id, node) for node_id, node in self._nodes.items()}

    def apply(self, conn: sqlite3.Connection, items: Sequence[Item]) -> None:
        dirty: set[str] = set()
        errors: list[tuple[int, str, str, str]] = []
        for item in items:
            try:
                node_id = self._fold(item)
            except FOLD_ERRORS as exc:
                errors.append((item[0], item[1], item[2], f"{type(exc).__name__}: {exc}"))
                continue
            if node_id is not None:
                dirty.add(node_id)
        views = {node_id: self._view(node_id, self._nodes[node_id]) for node_id in sorted(dirty)}
        conn.executemany(
            "INSERT OR REPLACE INTO trust_nodes (node_id, score, alpha, beta, timeout_ewma, health, anchor_us, "
            "successes, failures, timeouts, published_score, published_count, quarantined, quarantine_count) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [self._row(view, self._nodes[view.node_id].anchor_us) for view in views.values()],
        )
        conn.executemany("INSERT OR REPLACE INTO trust_errors (seq, event_id, type, error) VALUES (?, ?, ?, ?)", errors)
        if views:
            self.snapshot = {**self.snapshot, **views}  # a new mapping: readers never see it change

    # -- folding ---------------------------------------------------------------------

    def _fold(self, item: Item) -> str | None:
        type_, ts_us, payload = item[2], item[3], item[7]
        node_id = payload.get("node_id")
        if not isinstance(node_id, str) or not node_id:
            raise ValueError(f"{type_} needs node_id")
        node = self._nodes.get(node_id)
        if node is None:
            node = self._nodes[node_id] = _Node(self.params)
        if type_ == "node.health.updated":  # most of the log: keep it cheap
            health = payload.get("health") or "healthy"
            anchor = node.anchor_us
            if health == node.health and anchor is not None and ts_us - anchor < HOUR_US:
                return None
            node.health = str(health)
            self._decay(node, ts_us)
            return node_id
        self._decay(node, ts_us)
        if type_ == "workunit.completed":
            self._outcome(node, success=True, timeout=False)
        elif type_ == "workunit.failed":
            code = str(payload.get("error_code") or "").lower()
            self._outcome(node, success=False, timeout=any(m in code for m in TIMEOUT_MARKERS))
        elif type_ == "workunit.claim.expired":
            self._outcome(node, success=False, timeout=True)
        elif type_ == "trust.score.updated":
            node.published_score = Decimal(str(payload["score"]))
            node.published_count += 1
        elif type_ == "node.quarantined":
            node.quarantined = True
            node.quarantine_count += 1
        elif type_ == "node.quarantine.lifted":
            node.quarantined = False
        return node_id

    def _outcome(self, node: _Node, *, success: bool, timeout: bool) -> None:
        c = CONTEXT
        if success:
            node.alpha = c.add(node.alpha, ONE)
            node.successes += 1
        else:
            node.beta = c.add(node.beta, ONE)
            node.failures += 1
        # e <- lambda * x + (1 - lambda) * e, with x = 1 for a timeout and 0 otherwise.
        node.ewma = c.multiply(self._keep, node.ewma)
        if timeout:
            node.timeouts += 1
            node.ewma = c.add(node.ewma, self.params.ewma_lambda)

    def _decay(self, node: _Node, ts_us: int) -> bool:
        """Move toward the prior by whole hours of event time since the anchor; True when it moved."""
        if node.anchor_us is None:
            node.anchor_us = ts_us
            return True
        hours = (ts_us - node.anchor_us) // HOUR_US
        if hours <= 0:
            return False
        c, p = CONTEXT, self.params
        factor = self._decay_1h if hours == 1 else c.power(p.decay_per_hour, hours)
        node.alpha = c.add(p.alpha0, c.multiply(c.subtract(node.alpha, p.alpha0), factor))
        node.beta = c.add(p.beta0, c.multiply(c.subtract(node.beta, p.beta0), factor))
        node.ewma = c.multiply(node.ewma, factor)
        node.anchor_us += hours * HOUR_US
        return True

    # -- views -------------------------------------------------------------------------

    def _view(self, node_id: str, node: _Node) -> NodeTrust:
        return NodeTrust(
            node_id=node_id,
            score=score_of(node, self.params),
            alpha=node.alpha,
            beta=node.beta,
            timeout_ewma=node.ewma,
            health=node.health,
            successes=node.successes,
            failures=node.failures,
            timeouts=node.timeouts,
            published_score=node.published_score,
            published_count=node.published_count,
            quarantined=node.quarantined,
            quarantine_count=node.quarantine_count,
        )

    @staticmethod
    def _row(view: NodeTrust, anchor_us: int | None) -> tuple[Any, ...]:
        return (
            view.node_id,
            str(view.score),
            str(view.alpha),
            str(view.beta),
            str(view.timeout_ewma),
            view.health,
            anchor_us,
            view.successes,
            view.failures,
            view.timeouts,
            None if view.published_score is None else str(view.published_score),
            view.published_count,
            int(view.quarantined),
            view.quarantine_count,
        )
