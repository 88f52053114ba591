"""Invariant 3: replay produces identical financial state, and verification notices any tampering."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from invariant_support import build_log, fold, fold_with_restarts, scratch_dir

from krakod.log import EventLog
from krakod.projections import ProjectionService
from krakod.projections.replay import ledger_jsonl, verify_replay
from krakod.projections.service import default_projections
from krakod.projections.synthetic import append_all, invocation, pricing, random_workload

FIRST = "WHERE rowid = (SELECT MIN(rowid) FROM {table})"
TAMPERS = {
    "billing.ledger": "UPDATE billing_ledger SET amount_micros = amount_micros + 1 " + FIRST,
    "billing.wallets": "UPDATE billing_wallets SET debited_micros = debited_micros - 1 " + FIRST,
    "billing.sessions": "UPDATE billing_sessions SET tokens_in = tokens_in + 1 " + FIRST,
    "billing.state": "DELETE FROM billing_pending_llm " + FIRST,
    "trust": "UPDATE trust_nodes SET score = '0.999999' " + FIRST,
}


def export(db_path: Path) -> bytes:
    conn = sqlite3.connect(db_path)
    try:
        return "".join(f"{line}\n" for line in ledger_jsonl(conn)).encode()
    finally:
        conn.close()


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32))
def test_a_rebuild_matches_the_live_state_and_exports_the_same_bytes(seed: int) -> None:
    rng = random.Random(seed)
    with scratch_dir() as tmp:
        build_log(tmp / "events.sqlite", [random_workload(rng, 25)])
        live = fold_with_restarts(tmp / "events.sqlite", tmp / "live.sqlite", rng)
        report = verify_replay(tmp / "live.sqlite", tmp / "events.sqlite", tmp / "scratch.sqlite", default_projections)
        assert report.identical
        assert {d.projection: d.live_sha256 for d in report.digests} == live
        assert not (tmp / "scratch.sqlite").exists()

        fold(tmp / "events.sqlite", tmp / "again.sqlite", batch_limit=rng.randint(1, 50))
        assert export(tmp / "live.sqlite") == export(tmp / "again.sqlite")


def test_replay_verification_names_the_view_that_was_tampered_with() -> None:
    with scratch_dir() as tmp:
        log_path = tmp / "events.sqlite"
        events = random_workload(random.Random(7), 20)
        build_log(log_path, [events, [invocation("wu-pending", 1, "n1", 5, 5)]])
        for view, statement in TAMPERS.items():
            live = tmp / f"live-{view}.sqlite"
            fold(log_path, live)
            conn = sqlite3.connect(live)
            table = statement.split()[2] if statement.startswith("DELETE") else statement.split()[1]
            assert conn.execute(statement.format(table=table)).rowcount == 1
            conn.commit()
            conn.close()
            report = verify_replay(live, log_path, tmp / "scratch.sqlite", default_projections)
            assert [d.projection for d in report.digests if not d.identical] == [view]


def test_the_service_verifies_while_the_runner_keeps_following(tmp_path: Path) -> None:
    async def run() -> None:
        log = EventLog(tmp_path / "events.sqlite")
        await log.open()
        service = ProjectionService(batch_limit=25)
        await service.start(log, tmp_path)
        try:
            await append_all(log, [pricing(1), *random_workload(random.Random(3), 40)])
            verifying = asyncio.create_task(service.verify_replay())
            await append_all(log, random_workload(random.Random(4), 10))
            assert (await verifying).identical
            assert await service.wait_for_position(log.last_seq, 30.0)
            assert (await service.verify_replay()).identical
        finally:
            await service.stop()
            await log.close()

    asyncio.run(run())
