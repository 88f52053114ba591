"""Admission control: which priorities the gateway accepts in each admission mode.

The mode itself is a projection of `capacity.admission.mode.changed` events (see
`krakod.capacity.state`); this module only answers "admit this submission?".

Scope, for the daemon: admission applies to *new work* entering through the gateway
(submit and batch submit). Results, heartbeats, claims, started/completed/failed reports
and LLM invocation telemetry are never throttled, in any mode: refusing them would lose
work already paid for and would make overload worse, not better. Units already queued
are not dropped either. A rejection becomes gRPC `RESOURCE_EXHAUSTED` with
`AdmissionDecision.message`, plus a `workunit.rejected` event for the unit.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class AdmissionMode(StrEnum):
    """Admission modes, from least to most restrictive. Values are the wire strings."""

    OPEN = "OPEN"
    THROTTLED = "THROTTLED"
    CRITICAL = "CRITICAL"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]


_SEVERITY = {AdmissionMode.OPEN: 0, AdmissionMode.THROTTLED: 1, AdmissionMode.CRITICAL: 2}

PRIORITIES: tuple[str, ...] = ("p0", "p1", "p2", "p3")

# The lowest-urgency priority each mode still admits (p0 is the most urgent).
_LOWEST_ADMITTED = {AdmissionMode.OPEN: 3, AdmissionMode.THROTTLED: 1, AdmissionMode.CRITICAL: 0}
_RULES = {
    AdmissionMode.OPEN: "open_admits_all",
    AdmissionMode.THROTTLED: "throttled_admits_p0_p1",
    AdmissionMode.CRITICAL: "critical_admits_p0_only",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class AdmissionDecision:
    """The answer for one submission. `rule` is a stable identifier; `message` is for humans."""

    admitted: bool
    rule: str
    message: str


def parse_priority(priority: str) -> int:
    """Map "p0".."p3" to 0..3; anything else is a ValueError (the gateway maps it to INVALID_ARGUMENT)."""
    if priority not in PRIORITIES:
        raise ValueError(f"unknown priority {priority!r}: expected one of {', '.join(PRIORITIES)}")
    return PRIORITIES.index(priority)


def admit(mode: AdmissionMode | str, priority: str, *, mode_rule: str | None = None) -> AdmissionDecision:
    """Decide whether a new submission of `priority` is admitted in `mode`.

    OPEN admits everything; THROTTLED admits p0 and p1; CRITICAL admits p0 only.
    `mode_rule` (the rule of the event that entered the mode, e.g. "queue_depth_high")
    is quoted in the message when given. Raises ValueError for an unknown mode or priority.
    """
    current = AdmissionMode(mode)
    level = parse_priority(priority)
    rule = _RULES[current]
    why = f" (entered by rule {mode_rule})" if mode_rule else ""
    if level <= _LOWEST_ADMITTED[current]:
        return AdmissionDecision(
            admitted=True, rule=rule, message=f"admitted: admission mode {current.value}{why}, rule {rule}"
        )
    allowed = ", ".join(PRIORITIES[: _LOWEST_ADMITTED[current] + 1])
    return AdmissionDecision(
        admitted=False,
        rule=rule,
        message=(
            f"admission mode {current.value}{why}: rule {rule} rejects priority {priority}; "
            f"only {allowed} are admitted until load drops, retry later"
        ),
    )


def most_restrictive(modes: Iterable[AdmissionMode | str]) -> AdmissionMode:
    """The most restrictive of several modes (e.g. one per pool); OPEN when there are none."""
    return max((AdmissionMode(m) for m in modes), key=lambda m: m.severity, default=AdmissionMode.OPEN)


__all__ = ["PRIORITIES", "AdmissionDecision", "AdmissionMode", "admit", "most_restrictive", "parse_priority"]
