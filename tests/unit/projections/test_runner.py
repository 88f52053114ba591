"""The runner: positions committed with rows, resume after restart, rollback on failure, rebuild."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

import pytest

from krakod.log import EventLog
from krakod.projections.billing import BillingProjection
from krakod.projections.replay import rebuild_into, snapshot_digests
from krakod.projections.runner import Item, ProjectionRunner
from krakod.projections.service import default_projections
from krakod.projections.synthetic import append_all, completed, health


class Exploding(BillingProjection):
    """Billing that fails after writing its rows, on the batch holding `fail_at_seq`."""

    def __init__(self, fail_at_seq: int) -> None:
        super().__init__()
        self.fail_at_seq = fail_at_seq

    def apply(self, conn: sqlite3.Connection, items: Sequence[Item]) -> None:
        super().apply(conn, items)
        if any(item[0] == self.fail_at_seq for item in items):
            raise RuntimeError("disk on fire")


async def test_positions_are_stored_with_the_rows_and_resumed(log: EventLog, tmp_path: Path) -> None:
    await append_all(log, [completed(f"wu-{i}", 1, "n1", "1.000000") for i in range(10)])
    db = tmp_path / "p.sqlite"
    runner = ProjectionRunner(db, log.path, default_projections(), batch_limit=3)
    runner.open()
    runner.step(log.last_seq)
    assert runner.positions == {"billing": 3, "trust": 3}
    runner.close()

    resumed = ProjectionRunner(db, log.path, default_projections(), batch_limit=3)
    resumed.open()
    assert resumed.positions == {"billing": 3, "trust": 3}
    resumed.catch_up(log.last_seq)
    lines = resumed.conn.execute("SELECT COUNT(*), COUNT(DISTINCT source_event_id) FROM billing_ledger").fetchone()
    resumed.close()
    assert lines == (10, 10)


async def test_a_filtered_tail_still_moves_the_position(log: EventLog, tmp_path: Path) -> None:
    await append_all(log, [completed("wu-1", 1, "n1", "1.000000")])
    await append_all(log, [health("n1")])  # not a billing event
    runner = ProjectionRunner(tmp_path / "p.sqlite", log.path, [BillingProjection()])
    runner.open()
    runner.catch_up(log.last_seq)
    assert runner.position == log.last_seq == 2
    runner.close()


async def test_a_failed_batch_commits_nothing_and_memory_follows_the_rows(log: EventLog, tmp_path: Path) -> None:
    await append_all(log, [completed(f"wu-{i}", 1, "n1", "1.000000") for i in range(6)])
    db = tmp_path / "p.sqlite"
    runner = ProjectionRunner(db, log.path, [Exploding(fail_at_seq=5)], batch_limit=2)
    runner.open()
    runner.step(log.last_seq)
    runner.step(log.last_seq)
    with pytest.raises(RuntimeError, match="disk on fire"):
        runner.step(log.last_seq)
    assert runner.positions == {"billing": 4}
    assert runner.conn.execute("SELECT COUNT(*) FROM billing_ledger").fetchone() == (4,)
    runner.close()

    clean = tmp_path / "clean.sqlite"
    expected = rebuild_into(clean, log.path, [BillingProjection()])
    assert rebuild_into(db, log.path, [BillingProjection()]) == expected


async def test_a_reset_projection_refolds_to_the_same_state(log: EventLog, tmp_path: Path) -> None:
    await append_all(log, [completed(f"wu-{i}", 1, f"n{i % 3}", "0.250000") for i in range(20)])
    runner = ProjectionRunner(tmp_path / "p.sqlite", log.path, default_projections(), batch_limit=7)
    runner.open()
    runner.catch_up(log.last_seq)
    before = snapshot_digests(runner.conn, runner.projections)[1]
    runner.reset(["billing"])
    assert runner.positions == {"billing": 0, "trust": 20}
    assert runner.conn.execute("SELECT COUNT(*) FROM billing_ledger").fetchone() == (0,)
    runner.catch_up(log.last_seq)
    assert snapshot_digests(runner.conn, runner.projections)[1] == before
    runner.close()


def test_projection_names_must_be_unique(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unique"):
        ProjectionRunner(tmp_path / "p", tmp_path / "l", [BillingProjection(), BillingProjection()])
