"""What placement needs to know about a unit, and the trust view it reads."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from krakod.scheduler._version import VersionKey, parse_version

__all__ = ["KIND_CPU", "KIND_LLM", "PRIORITIES", "PRIVACY_LOCAL_ONLY", "PlacementRequest", "TrustView"]

KIND_CPU = "cpu"
KIND_LLM = "llm_pod"
PRIVACY_LOCAL_ONLY = "local_only"
PRIORITIES = ("p0", "p1", "p2", "p3")


@dataclass(frozen=True, slots=True, kw_only=True)
class PlacementRequest:
    """One attempt of one unit to place (fields of workunit.submitted).

    `round` counts placement rounds of the same attempt (a deferral or an unclaimed offer
    starts a new round); it is part of the scheduled event's idempotency key and of the
    rotation that picks which candidates are examined.
    """

    work_unit_id: str
    kind: str
    attempt: int = 1
    round: int = 1
    handler: str = ""
    priority: str = "p2"
    region: str = ""
    region_required: bool = False
    min_runtime_version: str = ""
    privacy: str = ""
    llm_tier: str = ""
    llm_model: str = ""
    min_version_key: VersionKey | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if not self.work_unit_id:
            raise ValueError("placement request: work_unit_id must not be empty")
        if not self.kind:
            raise ValueError("placement request: kind must not be empty")
        if self.attempt < 1 or self.round < 1:
            raise ValueError("placement request: attempt and round start at 1")
        if self.region_required and not self.region:
            raise ValueError("placement request: region_required needs a region")
        if self.priority not in PRIORITIES:
            raise ValueError(f"placement request: priority must be one of {PRIORITIES}, got {self.priority!r}")
        if self.min_runtime_version:
            object.__setattr__(self, "min_version_key", parse_version(self.min_runtime_version))


@dataclass(frozen=True, slots=True, kw_only=True)
class TrustView:
    """Trust as the trust projection last computed it; the scheduler only reads it.

    `scores` maps node id to a score in [0, 1]; a node without a score has
    `default_score`. `quarantined` nodes never receive work.
    """

    scores: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    quarantined: frozenset[str] = frozenset()
    default_score: float = 0.5

    def score(self, node_id: str) -> float:
        return self.scores.get(node_id, self.default_score)
