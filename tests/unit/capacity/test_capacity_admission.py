"""Enforcement by priority in each admission mode."""

from __future__ import annotations

import pytest

from krakod.capacity import AdmissionMode, admit, most_restrictive

OPEN, THROTTLED, CRITICAL = AdmissionMode.OPEN, AdmissionMode.THROTTLED, AdmissionMode.CRITICAL


@pytest.mark.parametrize(
    ("mode", "admitted"),
    [
        pytest.param(OPEN, {"p0", "p1", "p2", "p3"}, id="OPEN admits every priority"),
        pytest.param(THROTTLED, {"p0", "p1"}, id="THROTTLED admits p0 and p1 only"),
        pytest.param(CRITICAL, {"p0"}, id="CRITICAL admits p0 only"),
    ],
)
def test_each_mode_admits_exactly_its_priorities(mode: AdmissionMode, admitted: set[str]) -> None:
    for priority in ("p0", "p1", "p2", "p3"):
        assert admit(mode, priority).admitted is (priority in admitted), priority


def test_a_rejection_names_the_mode_the_rule_and_the_cause() -> None:
    decision = admit("THROTTLED", "p2", mode_rule="queue_depth_high")
    assert not decision.admitted
    assert decision.rule == "throttled_admits_p0_p1"
    assert "THROTTLED" in decision.message
    assert "throttled_admits_p0_p1" in decision.message
    assert "queue_depth_high" in decision.message
    assert "p2" in decision.message


def test_critical_rejects_p1_with_its_own_rule() -> None:
    decision = admit(CRITICAL, "p1")
    assert (decision.admitted, decision.rule) == (False, "critical_admits_p0_only")
    assert "CRITICAL" in decision.message


@pytest.mark.parametrize(("mode", "priority"), [("OPEN", "p4"), ("OPEN", "high"), ("PANIC", "p0")])
def test_unknown_modes_and_priorities_are_errors(mode: str, priority: str) -> None:
    with pytest.raises(ValueError):
        admit(mode, priority)


def test_the_most_restrictive_mode_wins() -> None:
    assert most_restrictive([]) is OPEN
    assert most_restrictive([OPEN, "CRITICAL", THROTTLED]) is CRITICAL
    assert most_restrictive([OPEN, THROTTLED]) is THROTTLED
