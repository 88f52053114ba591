"""Invariant: budgets never overshoot. Concurrent reservations through the real log writer
admit exactly what the credit covers, every reservation is settled or released once, and
the book rebuilt from the log equals the live one."""

from __future__ import annotations

import asyncio
from collections import Counter
from decimal import Decimal
from pathlib import Path

from krakod.budgets import BudgetBook, BudgetConfig, ReserveGuard, exceeded_event, scope_of
from krakod.log import LOG_FILE_NAME, AppendResult, Event, EventLog, NewEvent, replay_all
from krakod.projections.commands import credit_event
from krakod.units import Unit

TENANT = "acme"
UNITS = 1_000
PROMPT = "x" * 400  # 100 estimated input tokens
MAX_TOKENS = 1_900  # worst case 2,000 tokens: 0.004000 USD at 0.002000 per 1k
PER_UNIT_USD = Decimal("0.004000")
CREDIT_LIMIT_USD = Decimal("1.000000")
TOP_UP_USD = Decimal("0.500000")
USED_TOKENS = 1_200


def llm_unit(index: int, session: str | None = None) -> Unit:
    spec = {
        "kind": "llm_pod",
        "handler": "chat",
        "input": {"prompt": PROMPT},
        "llm": {"tier": "small", "model": "stub-1", "max_tokens": MAX_TOKENS},
    }
    unit_id = f"wu-{index:04d}"
    return Unit(
        work_unit_id=unit_id,
        tenant_id=TENANT,
        session_id=session or unit_id,
        spec=spec,
        submitted_seq=0,
        submitted_ts_us=0,
    )


def raw_balance_micros(book: BudgetBook, tenant: str) -> int:
    """credit_limit + credited - settled - reserved, unclamped: what spendable() must never hide."""
    snap = book.snapshot(tenant)
    raw = Decimal(snap["credit_limit"]) + Decimal(snap["credited"]) - Decimal(snap["settled"])
    return int((raw - Decimal(snap["reserved"])).scaleb(6))


async def reserve_all(log: EventLog, book: BudgetBook, units: list[Unit]) -> list[tuple[AppendResult, ReserveGuard]]:
    """One append_many per unit, all in flight at once, as concurrent scheduling passes would be."""
    requests = [book.reserve_events(unit) for unit in units]
    assert all(len(events) == 1 for events, _ in requests)
    results = await asyncio.gather(*(log.append_many(events, guards=guards) for events, guards in requests))
    return [(r[0], guards[0]) for r, (_, guards) in zip(results, requests, strict=True)]


async def close_all(log: EventLog, book: BudgetBook, events: list[NewEvent | None]) -> list[AppendResult]:
    present = [e for e in events if e is not None]
    results = await asyncio.gather(*(log.append(e, guard=book.guard_open) for e in present))
    return list(results)


async def rebuilt_from(log: EventLog, config: BudgetConfig) -> BudgetBook:
    book = BudgetBook(config)
    await replay_all(log, book.apply)
    return book


async def test_concurrent_reservations_never_overshoot_the_tenant_and_never_leak(tmp_path: Path) -> None:
    config = BudgetConfig(credit_limit_usd=CREDIT_LIMIT_USD, llm_usd_per_1k_tokens=Decimal("0.002000"))
    book = BudgetBook(config)
    lowest_balance: list[int] = []

    def watch(event: Event) -> None:  # a second stager: the balance at every position of the log
        lowest_balance.append(raw_balance_micros(book, TENANT))

    log = EventLog(tmp_path / LOG_FILE_NAME)
    await log.open()
    try:
        log.add_stager(book.apply)
        log.add_stager(watch)
        assert (await log.append(credit_event(TENANT, TOP_UP_USD, "topup-1"))).created
        units = [llm_unit(i) for i in range(UNITS)]
        assert book.estimate(units[0].spec) == (2_000, PER_UNIT_USD)

        outcomes = await reserve_all(log, book, units)

        admitted = [unit for unit, (result, _) in zip(units, outcomes, strict=True) if result.created]
        refused = [(unit, guard) for unit, (result, guard) in zip(units, outcomes, strict=True) if not result.created]
        expected = int((CREDIT_LIMIT_USD + TOP_UP_USD) // PER_UNIT_USD)
        assert len(admitted) == expected == 375
        assert min(lowest_balance) >= 0
        assert all(scope_of(r.refused) == "tenant" for r, _ in outcomes if not r.created)
        assert all(guard.refusal is not None and guard.refusal.scope == "tenant" for _, guard in refused)
        assert {r.work_unit_id for r in book.open_reservations()} == {u.work_unit_id for u in admitted}
        snap = book.snapshot(TENANT)
        assert Decimal(snap["reserved"]) == expected * PER_UNIT_USD
        assert Decimal(snap["spendable"]) == CREDIT_LIMIT_USD + TOP_UP_USD - expected * PER_UNIT_USD

        # What the dispatcher does with the refused: one budget.exceeded each, changing no balance.
        exceeded = await log.append_many(
            [exceeded_event(unit, guard.refusal) for unit, guard in refused if guard.refusal]
        )
        assert all(r.created for r in exceeded) and len(exceeded) == UNITS - expected

        # Settle half, release the rest, all at once; then every one again the other way and twice.
        half = len(admitted) // 2
        cost = book.actual_cost(USED_TOKENS, "small", "stub-1")
        settles = [book.settle_event(unit, cost, USED_TOKENS) for unit in admitted[:half]]
        releases = [book.release_event(unit, "failed") for unit in admitted[half:]]
        late_releases = [book.release_event(unit, "cancelled") for unit in admitted[:half]]
        late_settles = [book.settle_event(unit, cost, USED_TOKENS) for unit in admitted[half:]]
        first = await close_all(log, book, settles + releases)
        assert len(first) == len(admitted) and all(r.created for r in first)
        again = await close_all(log, book, settles + releases + late_releases + late_settles)
        assert not any(r.created for r in again)

        assert list(book.open_reservations()) == []
        snap = book.snapshot(TENANT)
        assert Decimal(snap["reserved"]) == 0
        assert Decimal(snap["settled"]) == half * cost
        assert Decimal(snap["spendable"]) == CREDIT_LIMIT_USD + TOP_UP_USD - half * cost
        assert min(lowest_balance) >= 0

        # The log holds exactly one reservation per admitted unit and one close per reservation.
        events = await log.read(0, 10_000)
        types = Counter(e.type for e in events)
        assert types["budget.reserved"] == expected
        assert types["budget.settled"] == half and types["budget.released"] == expected - half
        closes = Counter(e.work_unit_id for e in events if e.type in ("budget.settled", "budget.released"))
        assert set(closes.values()) == {1}

        rebuilt = await rebuilt_from(log, config)
        assert rebuilt.snapshot(TENANT) == book.snapshot(TENANT)
        for unit in units:
            assert rebuilt.session_snapshot(TENANT, unit.session_id) == book.session_snapshot(TENANT, unit.session_id)
            assert rebuilt.reservation(unit.work_unit_id) == book.reservation(unit.work_unit_id)
    finally:
        await log.close()


async def test_concurrent_reservations_never_overshoot_a_session_limit(tmp_path: Path) -> None:
    sessions, per_session = 10, 30
    config = BudgetConfig(
        credit_limit_usd=Decimal("1000.000000"),
        session_max_llm_invocations=per_session,
        llm_usd_per_1k_tokens=Decimal("0.002000"),
    )
    book = BudgetBook(config)
    log = EventLog(tmp_path / LOG_FILE_NAME)
    await log.open()
    try:
        log.add_stager(book.apply)
        units = [llm_unit(i, session=f"session-{i % sessions}") for i in range(UNITS)]
        outcomes = await reserve_all(log, book, units)
        admitted = Counter(u.session_id for u, (r, _) in zip(units, outcomes, strict=True) if r.created)
        assert admitted == dict.fromkeys((f"session-{s}" for s in range(sessions)), per_session)
        assert all(scope_of(r.refused) == "session" for r, _ in outcomes if not r.created)
        rebuilt = await rebuilt_from(log, config)
        assert rebuilt.snapshot(TENANT) == book.snapshot(TENANT)
    finally:
        await log.close()
