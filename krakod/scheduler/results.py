"""Placement outcomes and their event payloads (docs/events.md).

Scores are kept as integer micro-units (6 decimal places): ranking compares exactly what
the log shows, and payloads carry decimal strings, never floats.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import NamedTuple

__all__ = ["COMPONENTS", "Candidate", "Deferral", "Placement", "micro", "micro_to_decimal"]

COMPONENTS = ("capacity", "load", "trust", "region")
_MICRO = 1_000_000


def micro(value: float) -> int:
    """A float in micro-units, rounded half to even (like Decimal ROUND_HALF_EVEN on 6 places)."""
    return round(value * _MICRO)


def micro_to_decimal(value: int) -> str:
    """Micro-units as a 6-place decimal string: 1234567 -> "1.234567"."""
    return str(Decimal(value).scaleb(-6).quantize(Decimal("0.000001")))


class Candidate(NamedTuple):
    """A node that passed every filter, with its score.

    The field order is the rank order, so plain tuple comparison ranks candidates:
    higher score, then lower queue depth, then smallest node id (ids are unique, so the
    comparison never reaches the floats). A tuple, because placement builds many.
    """

    neg_score_micro: int
    queue_depth: int
    node_id: str
    values: tuple[float, ...]  # component values in COMPONENTS order, each in [0, 1]
    penalty: float

    @property
    def score_micro(self) -> int:
        return -self.neg_score_micro

    @property
    def penalty_micro(self) -> int:
        return micro(self.penalty)

    @property
    def components_micro(self) -> tuple[int, ...]:
        return tuple(micro(v) for v in self.values)

    @property
    def components(self) -> dict[str, str]:
        return {name: micro_to_decimal(micro(v)) for name, v in zip(COMPONENTS, self.values, strict=True)}


@dataclass(frozen=True, slots=True, kw_only=True)
class Placement:
    """Where one attempt goes. `offered_to[0] == node_id`; more than one in multi-agent mode.

    `eligible_count` counts the nodes that passed every filter among those examined (the
    candidate set is bounded, see PlacementConfig.max_feasible). `ranked` is that set in
    rank order, for explaining the decision; it is not part of the payload.
    """

    work_unit_id: str
    attempt: int
    round: int
    node_id: str
    offered_to: tuple[str, ...]
    chosen: Candidate
    eligible_count: int
    reason: str  # "best_score" | "anti_affinity" | "only_candidate" | "excluded_fallback"
    ranked: tuple[Candidate, ...]

    @property
    def score(self) -> str:
        return micro_to_decimal(self.chosen.score_micro)

    @property
    def components(self) -> dict[str, str]:
        return self.chosen.components

    def to_payload(self) -> dict[str, object]:
        """The workunit.scheduled payload (idempotency key `schedule:{id}:{attempt}:{round}`)."""
        return {
            "attempt": self.attempt,
            "round": self.round,
            "node_id": self.node_id,
            "offered_to": list(self.offered_to),
            "score": self.score,
            "components": self.components,
            "penalty": micro_to_decimal(self.chosen.penalty_micro),
            "eligible": self.eligible_count,
            "reason": self.reason,
        }

    @property
    def idempotency_key(self) -> str:
        return f"schedule:{self.work_unit_id}:{self.attempt}:{self.round}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Deferral:
    """Nothing fit. `reasons` counts nodes per filter name; together with "limit" (free
    nodes the bounded scan did not reach) they account for every registered node, so
    `sum(reasons.values()) == candidates`. `details` keeps one human reason per filter."""

    work_unit_id: str
    attempt: int
    round: int
    reasons: Mapping[str, int]
    candidates: int
    details: Mapping[str, str] = field(default_factory=dict)

    def to_payload(self) -> dict[str, object]:
        """The workunit.scheduling.deferred payload."""
        return {
            "attempt": self.attempt,
            "round": self.round,
            "reasons": dict(sorted(self.reasons.items())),
            "candidates": self.candidates,
        }
