"""Deterministic backoff against fixed vectors (computed once, written here literally)."""

from __future__ import annotations

import hashlib

import pytest

from krakod.scheduler import BackoffConfig, backoff_ms

VECTORS = {
    "wu-1": [554, 1167, 2157, 4325, 8659, 16162, 30000, 30000],
    "wu-2": [590, 1003, 2321, 4704, 8572, 16603, 30000, 30000],
    "01J9ZQ7Z3M8K": [572, 1082, 2094, 4399, 9331, 19127, 30000, 30000],
}
VECTORS_HIGH_CONGESTION = {
    "wu-1": [831, 1750, 3235, 6487, 12988, 24243, 30000, 30000],
    "wu-2": [885, 1504, 3481, 7056, 12858, 24904, 30000, 30000],
    "01J9ZQ7Z3M8K": [858, 1623, 3141, 6598, 13996, 28690, 30000, 30000],
}


@pytest.mark.parametrize("work_unit_id", sorted(VECTORS))
def test_backoff_matches_the_fixed_vectors(work_unit_id: str) -> None:
    assert [backoff_ms(work_unit_id, attempt) for attempt in range(1, 9)] == VECTORS[work_unit_id]


@pytest.mark.parametrize("work_unit_id", sorted(VECTORS_HIGH_CONGESTION))
def test_congestion_backoff_matches_the_fixed_vectors(work_unit_id: str) -> None:
    delays = [backoff_ms(work_unit_id, attempt, multiplier=1.5) for attempt in range(1, 9)]
    assert delays == VECTORS_HIGH_CONGESTION[work_unit_id]


def test_the_first_vector_follows_the_documented_formula() -> None:
    # 500 ms · 2^0 plus sha256("wu-1:1")'s first 8 bytes mod 200001 parts per million.
    jitter_ppm = int.from_bytes(hashlib.sha256(b"wu-1:1").digest()[:8], "big") % 200_001
    assert backoff_ms("wu-1", 1) == 500 + 500 * jitter_ppm // 1_000_000


@pytest.mark.parametrize("attempt", range(1, 12))
def test_the_delay_stays_within_the_base_the_jitter_and_the_cap(attempt: int) -> None:
    for index in range(200):
        delay = backoff_ms(f"unit-{index}", attempt)
        base = 500 * 2 ** (attempt - 1)
        assert min(base, 30_000) <= delay <= min(base * 1.2, 30_000)


def test_the_cap_is_configurable() -> None:
    assert backoff_ms("wu-1", 4, config=BackoffConfig(cap_ms=1_000)) == 1_000


def test_attempts_start_at_one() -> None:
    with pytest.raises(ValueError, match="attempt starts at 1"):
        backoff_ms("wu-1", 0)
