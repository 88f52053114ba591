"""The trust publisher: turns projected trust into `trust.score.updated` and quarantine events.

A projection never appends during its fold. This decider runs after the trust
projection committed a batch: it compares each node's projected score with what
the log says was published, and returns the events to append:
- `trust.score.updated {node_id, score, previous}` when the score moved by more than
  `publish_delta` since the last published score (or since the prior, 0.5, if none);
- `node.quarantined {node_id, score, threshold}` when a node not quarantined scores
  below `quarantine_below`;
- `node.quarantine.lifted {node_id, score, threshold}` when a quarantined node scores
  at least `lift_at` (hysteresis, so a node does not flap around one threshold).

Idempotency keys count what the log already holds (`trust:{node}:{n}`,
`quarantine:{node}:{n}`, `quarantine-lifted:{node}:{n}`): two publishers that decide
from the same position append one event.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from krakod.log import NewEvent
from krakod.projections.money import CONTEXT
from krakod.projections.trust import NodeTrust

PRIOR_SCORE = Decimal("0.500000")


@dataclass(frozen=True, slots=True)
class PublishPolicy:
    publish_delta: Decimal = Decimal("0.05")
    quarantine_below: Decimal = Decimal("0.2")
    lift_at: Decimal = Decimal("0.3")

    def __post_init__(self) -> None:
        if not self.quarantine_below <= self.lift_at:
            raise ValueError("lift_at must be at least quarantine_below")


DEFAULT_POLICY = PublishPolicy()


def trust_events(nodes: Mapping[str, NodeTrust], policy: PublishPolicy = DEFAULT_POLICY) -> list[NewEvent]:
    """Events that bring the published trust in line with the projected one (sorted by node id)."""
    events: list[NewEvent] = []
    for node_id in sorted(nodes):
        node = nodes[node_id]
        previous = node.published_score if node.published_score is not None else PRIOR_SCORE
        if abs(CONTEXT.subtract(node.score, previous)) > policy.publish_delta:
            events.append(
                NewEvent(
                    type="trust.score.updated",
                    payload={"node_id": node_id, "score": str(node.score), "previous": str(previous)},
                    idempotency_key=f"trust:{node_id}:{node.published_count + 1}",
                    source="krakod:trust",
                )
            )
        if not node.quarantined and node.score < policy.quarantine_below:
            events.append(
                NewEvent(
                    type="node.quarantined",
                    payload={"node_id": node_id, "score": str(node.score), "threshold": str(policy.quarantine_below)},
                    idempotency_key=f"quarantine:{node_id}:{node.quarantine_count + 1}",
                    source="krakod:trust",
                )
            )
        elif node.quarantined and node.score >= policy.lift_at:
            events.append(
                NewEvent(
                    type="node.quarantine.lifted",
                    payload={"node_id": node_id, "score": str(node.score), "threshold": str(policy.lift_at)},
                    idempotency_key=f"quarantine-lifted:{node_id}:{node.quarantine_count}",
                    source="krakod:trust",
                )
            )
    return events
