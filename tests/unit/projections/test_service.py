"""ProjectionService as krakod uses it: follow the log, answer queries, publish trust, verify replay."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest

from krakod.log import EventLog
from krakod.projections import ProjectionService, pricing_from_env
from krakod.projections.synthetic import append_all, claim_expired, completed, credit, health, invocation

DEADLINE_S = 30.0


@pytest.fixture
async def service(log: EventLog, tmp_path: Path) -> AsyncIterator[ProjectionService]:
    svc = ProjectionService(batch_limit=50)
    await svc.start(log, tmp_path)
    yield svc
    await svc.stop()


async def caught_up(svc: ProjectionService, log: EventLog) -> None:
    assert await svc.wait_for_position(log.last_seq, DEADLINE_S), f"lag {svc.lag()} after {DEADLINE_S} s"


async def test_wallets_ledger_rollups_and_export_follow_the_log(service: ProjectionService, log: EventLog) -> None:
    await append_all(log, [credit("t1", "1.000000", "k1")])
    await append_all(log, [completed(f"wu-{i}", 1, "n1", "1.000000", session="s7") for i in range(120)])
    await caught_up(service, log)
    assert service.lag() == 0

    (wallet,) = await service.wallets("t1")
    assert (wallet.credited_usd, wallet.debited_usd, wallet.balance_usd) == (
        Decimal("1.000000"),
        Decimal("0.060000"),
        Decimal("0.940000"),
    )
    first, after = await service.ledger("t1", 0, 100)
    rest, end = await service.ledger("t1", after, 100)
    assert len(first) == 100 and len(rest) == 20 and end == rest[-1]["id"]
    assert (await service.ledger("t1", end, 100)) == ([], end)

    exported = [line async for line in service.export_ledger_jsonl("t1")]
    assert len(exported) == 120 and '"line_type":"workunit_cpu"' in exported[0]

    rollup = await service.session_rollup("s7")
    assert rollup is not None and rollup.cpu_seconds == Decimal("120.000000") and rollup.lines == 120
    assert rollup.cost_usd == Decimal("0.060000")
    assert await service.session_rollup("nope") is None


async def test_check_and_replay_verification_agree_with_the_live_state(
    service: ProjectionService, log: EventLog
) -> None:
    await append_all(log, [invocation("wu-1", 1, "n1", 10, 20), completed("wu-1", 1, "n1", "0.100000")])
    await caught_up(service, log)
    report = await service.check()
    assert report.findings == () and report.checked_through_seq >= 2  # the publisher may have appended since
    replay = await service.verify_replay()
    assert replay.identical and {d.projection for d in replay.digests} >= {"billing.ledger", "trust"}


async def test_rebuild_refolds_from_seq_zero(service: ProjectionService, log: EventLog) -> None:
    await append_all(log, [completed(f"wu-{i}", 1, "n1", "1.000000") for i in range(30)])
    await caught_up(service, log)
    before, _ = await service.ledger(None, 0, 1000)
    await service.rebuild()
    await caught_up(service, log)
    assert (await service.ledger(None, 0, 1000))[0] == before


async def test_the_trust_publisher_quarantines_a_node_that_keeps_timing_out(
    service: ProjectionService, log: EventLog
) -> None:
    await append_all(log, [health("bad"), health("good")])
    await append_all(log, [claim_expired(f"wu-{i}", 1, "bad") for i in range(8)])
    deadline_s = DEADLINE_S
    while "bad" not in service.quarantined() and deadline_s > 0:
        await caught_up(service, log)
        await log.wait_for_commit(log.last_seq, timeout_s=0.5)  # the publisher's append, if still coming
        deadline_s -= 0.5
    assert service.quarantined() == {"bad"}
    scores = service.trust_scores()
    assert scores["bad"] < Decimal("0.2") and scores["good"] == Decimal("0.500000")
    keys = [e.idempotency_key for e in await log.read(0, 100, types=["node.quarantined"])]
    assert keys == ["quarantine:bad:1"]


async def test_pricing_is_appended_once_and_again_when_it_changes(service: ProjectionService, log: EventLog) -> None:
    config = pricing_from_env({})
    first = await service.pricing_event(config)
    assert first is not None and first.idempotency_key == "pricing:1"
    await log.append(first)
    assert await service.pricing_event(config) is None
    changed = await service.pricing_event(replace(config, cpu_usd_per_sec=Decimal("0.000600")))
    assert changed is not None and changed.payload["version"] == 2


async def test_stop_is_safe_twice_and_start_resumes(log: EventLog, tmp_path: Path) -> None:
    svc = ProjectionService()
    await svc.start(log, tmp_path)
    await append_all(log, [completed("wu-1", 1, "n1", "1.000000")])
    await caught_up(svc, log)
    await svc.stop()
    await svc.stop()
    await append_all(log, [completed("wu-2", 1, "n1", "1.000000")])
    again = ProjectionService()
    await again.start(log, tmp_path)
    await caught_up(again, log)
    lines, _ = await again.ledger(None, 0, 10)
    assert [line["work_unit_id"] for line in lines] == ["wu-1", "wu-2"]
    await again.stop()
