"""Budgets: worst-case estimates, the fold, settle/release exactly once, session limits, scopes."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from krakod.budgets import (
    REJECT_CODE,
    BudgetBook,
    BudgetConfig,
    Refusal,
    ReserveGuard,
    exceeded_event,
    scope_of,
)
from krakod.log import LOG_FILE_NAME, EventLog, NewEvent, replay_all
from krakod.projections.commands import credit_event
from krakod.units import Unit

PRICE = Decimal("0.002000")


def llm_unit(
    unit_id: str,
    *,
    tenant: str = "acme",
    session: str = "s1",
    prompt: str = "",
    system: str = "",
    max_tokens: int | None = 100,
    input_max_tokens: int | None = None,
    tier: str = "small",
    model: str = "stub-1",
    kind: str = "llm_pod",
) -> Unit:
    unit_input: dict[str, Any] = {"prompt": prompt, "system": system}
    if input_max_tokens is not None:
        unit_input["max_tokens"] = input_max_tokens
    llm: dict[str, Any] = {"tier": tier, "model": model}
    if max_tokens is not None:
        llm["max_tokens"] = max_tokens
    spec = {"kind": kind, "handler": "chat", "input": unit_input, "llm": llm if kind == "llm_pod" else None}
    return Unit(
        work_unit_id=unit_id, tenant_id=tenant, session_id=session, spec=spec, submitted_seq=0, submitted_ts_us=0
    )


class FakeWriter:
    """The writer's decision rule without SQLite: key first, then guard, then stage into the book."""

    def __init__(self, book: BudgetBook) -> None:
        self.book = book
        self.seq = itertools.count(1)
        self.keys: set[str] = set()
        self.appended: list[NewEvent] = []

    def append(self, events: Sequence[NewEvent], guards: Sequence[Any] | None = None) -> list[str | None]:
        """One entry per event: None when appended, "duplicate", or the guard's reason."""
        outcomes: list[str | None] = []
        for index, new in enumerate(events):
            if new.key() in self.keys:
                outcomes.append("duplicate")
                continue
            guard = None if guards is None else guards[index]
            reason = None if guard is None else guard(new)
            if reason is not None:
                outcomes.append(reason)
                continue
            self.keys.add(new.key())
            self.appended.append(new)
            self.book.apply(new.to_event(next(self.seq), 0))
            outcomes.append(None)
        return outcomes

    def reserve(self, unit: Unit) -> tuple[str | None, ReserveGuard | None]:
        events, guards = self.book.reserve_events(unit)
        if not events:
            return "nothing due", None
        return self.append(events, guards)[0], guards[0]

    def close(self, event: NewEvent | None) -> str | None:
        if event is None:
            return "no event"
        return self.append([event], [self.book.guard_open])[0]


def config(**overrides: Any) -> BudgetConfig:
    return BudgetConfig(**{"llm_usd_per_1k_tokens": PRICE, **overrides})


# -- estimates and rounding ------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "kwargs", "tokens"),
    [
        ("input tokens are ceil(chars / 4) plus max_tokens", {"prompt": "abcdefghi", "max_tokens": 100}, 3 + 100),
        ("the system prompt counts as input", {"prompt": "abcd", "system": "efgh", "max_tokens": 10}, 2 + 10),
        ("llm.max_tokens wins over input.max_tokens", {"max_tokens": 50, "input_max_tokens": 900}, 50),
        ("input.max_tokens is used when llm has none", {"max_tokens": None, "input_max_tokens": 70}, 70),
        ("max_tokens 0 means the default worst case", {"max_tokens": 0}, 256),
        ("no max_tokens anywhere means the default", {"max_tokens": None}, 256),
    ],
)
def test_estimate_tokens(case: str, kwargs: dict[str, Any], tokens: int) -> None:
    spec = llm_unit("u", **kwargs).spec
    assert config().estimate(spec) == (tokens, (Decimal(tokens) * PRICE / 1000).quantize(Decimal("0.000001")))


def test_price_by_model_then_tier_then_base() -> None:
    c = config(
        llm_usd_per_1k_tokens_by_tier={"large": Decimal("0.030000")},
        llm_usd_per_1k_tokens_by_model={"gpt-big": Decimal("0.060000")},
    )
    assert c.estimate(llm_unit("u", max_tokens=1000, tier="large", model="gpt-big").spec)[1] == Decimal("0.060000")
    assert c.estimate(llm_unit("u", max_tokens=1000, tier="large", model="other").spec)[1] == Decimal("0.030000")
    assert c.estimate(llm_unit("u", max_tokens=1000, tier="small", model="other").spec)[1] == Decimal("0.002000")
    assert c.actual_cost(500, "large", "gpt-big") == Decimal("0.030000")


@pytest.mark.parametrize(
    ("tokens", "cost"),
    [(1, "0.000000"), (3, "0.000002"), (5, "0.000002"), (7, "0.000004"), (2000, "0.001000")],
)
def test_actual_cost_rounds_half_even_to_the_micro(tokens: int, cost: str) -> None:
    # 0.000500 USD per 1k tokens: one token costs half a micro-dollar, so ties alternate.
    c = config(llm_usd_per_1k_tokens=Decimal("0.000500"))
    assert c.actual_cost(tokens, "small", "m") == Decimal(cost)
    assert str(c.actual_cost(tokens, "small", "m")) == cost


@settings(max_examples=200, deadline=None)
@given(tokens=st.integers(0, 10**7), price=st.integers(0, 10**6))
def test_actual_cost_matches_decimal_half_even(tokens: int, price: int) -> None:
    price_usd = Decimal(price).scaleb(-6)
    expected = (Decimal(tokens) * price_usd / 1000).quantize(Decimal("0.000001"))  # default context: half-even
    assert config(llm_usd_per_1k_tokens=price_usd).actual_cost(tokens, "t", "m") == expected


def test_price_is_read_from_the_environment_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KRAKO_LLM_USD_PER_1K_TOKENS", "0.010000")
    c = BudgetConfig()
    book = BudgetBook(c)
    monkeypatch.setenv("KRAKO_LLM_USD_PER_1K_TOKENS", "9.000000")
    assert book.estimate(llm_unit("u", max_tokens=1000).spec) == (1000, Decimal("0.010000"))
    monkeypatch.delenv("KRAKO_LLM_USD_PER_1K_TOKENS")
    assert BudgetConfig().llm_usd_per_1k_tokens == Decimal("0.002000")


def test_from_env_reads_tier_prices_like_billing() -> None:
    c = BudgetConfig.from_env({"KRAKO_LLM_USD_PER_1K_TOKENS_LARGE": "0.050000"}, session_max_tokens=10)
    assert c.price_micros("large", "x") == 50_000
    assert c.price_micros("small", "x") == 2_000
    assert c.session_max_tokens == 10


@pytest.mark.parametrize(
    "bad",
    [
        {"credit_limit_usd": Decimal(-1)},
        {"session_max_tokens": -1},
        {"unit_max_tokens": True},
        {"llm_usd_per_1k_tokens": Decimal("NaN")},
        {"llm_usd_per_1k_tokens_by_tier": {"small": Decimal(-1)}},
    ],
)
def test_config_refuses_bad_values(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        config(**bad)


# -- the fold --------------------------------------------------------------------


def test_spendable_is_credit_limit_plus_top_ups_minus_settled_and_reserved() -> None:
    book = BudgetBook(config(credit_limit_usd=Decimal("1.000000")))
    w = FakeWriter(book)
    w.append([credit_event("acme", "0.500000", "topup-1")])
    w.append([credit_event("acme", "0.500000", "topup-1")])  # the same top-up again
    assert book.spendable("acme") == Decimal("1.500000")

    unit = llm_unit("u1", max_tokens=1000)  # 1,000 tokens: 0.002000
    assert w.reserve(unit)[0] is None
    assert book.snapshot("acme") == {
        "tenant_id": "acme",
        "credit_limit": "1.000000",
        "credited": "0.500000",
        "settled": "0.000000",
        "reserved": "0.002000",
        "spendable": "1.498000",
        "overrun": "0.000000",
    }
    assert w.close(book.settle_event(unit, book.actual_cost(400, "small", "stub-1"), 400)) is None
    snap = book.snapshot("acme")
    assert (snap["settled"], snap["reserved"], snap["spendable"]) == ("0.000800", "0.000000", "1.499200")
    assert book.snapshot("other")["spendable"] == "1.000000"  # a tenant without events has the base


def test_non_llm_units_and_already_reserved_units_need_no_reservation() -> None:
    book = BudgetBook(config())
    w = FakeWriter(book)
    assert book.reserve_events(llm_unit("cpu", kind="cpu")) == ([], [])
    unit = llm_unit("u1")
    w.reserve(unit)
    unit.attempt = 2  # a retry is covered by the first reservation
    assert book.reserve_events(unit) == ([], [])


def test_reserved_event_payload_and_key() -> None:
    book = BudgetBook(config())
    events, guards = book.reserve_events(llm_unit("u1", prompt="x" * 40, max_tokens=990, session="sess"))
    [event] = events
    assert event.type == "budget.reserved"
    assert event.idempotency_key == "reserve:u1"
    assert event.payload == {"attempt": 1, "amount_usd": "0.002000", "tokens": 1000, "session_id": "sess"}
    assert (event.tenant_id, event.execution_session_id, event.work_unit_id) == ("acme", "sess", "u1")
    assert len(guards) == 1


# -- settle and release exactly once ---------------------------------------------


def test_settle_or_release_happens_once() -> None:
    book = BudgetBook(config(credit_limit_usd=Decimal("1.000000")))
    w = FakeWriter(book)
    unit = llm_unit("u1", max_tokens=1000)
    w.reserve(unit)
    settle = book.settle_event(unit, Decimal("0.001000"), 500)
    release = book.release_event(unit, "cancelled")
    assert settle is not None and release is not None
    assert settle.idempotency_key == "settle:u1" and release.idempotency_key == "release:u1"
    assert settle.payload == {"attempt": 1, "amount_usd": "0.001000", "reserved_usd": "0.002000", "tokens": 500}
    assert release.payload == {"attempt": 1, "amount_usd": "0.002000", "reason": "cancelled"}

    assert w.close(settle) is None
    assert w.close(settle) == "duplicate"  # the key
    assert w.close(release) == "budget reservation already settled"  # the guard: settle raced a release
    assert book.settle_event(unit, Decimal("0.001000"), 500) is None  # nothing open to settle any more
    assert book.release_event(unit, "late") is None
    assert book.snapshot("acme")["settled"] == "0.001000"
    assert book.snapshot("acme")["reserved"] == "0.000000"


def test_the_fold_ignores_a_second_close_even_under_another_key() -> None:
    book = BudgetBook(config(credit_limit_usd=Decimal("1.000000")))
    w = FakeWriter(book)
    unit = llm_unit("u1", max_tokens=1000)
    w.reserve(unit)
    release = book.release_event(unit, "failed")
    assert release is not None
    w.append([release])
    # A buggy sender: the same facts under new keys and without guards.
    w.append([NewEvent(**{**_fields(release), "idempotency_key": "release:u1:again"})])
    settle = NewEvent(
        type="budget.settled",
        payload={"amount_usd": "0.002000", "reserved_usd": "0.002000", "tokens": 1},
        idempotency_key="settle:u1",
        tenant_id="acme",
        work_unit_id="u1",
    )
    w.append([settle])
    assert book.snapshot("acme")["spendable"] == "1.000000"
    assert book.session_snapshot("acme", "s1")["invocations"] == 0


def test_closing_a_unit_without_a_reservation_counts_nothing() -> None:
    book = BudgetBook(config())
    w = FakeWriter(book)
    unit = llm_unit("never-reserved")
    assert book.settle_event(unit, Decimal("0.5"), 10) is None
    assert book.release_event(unit, "failed") is None
    stray = NewEvent(type="budget.released", payload={"amount_usd": "1.000000"}, tenant_id="acme", work_unit_id="x")
    assert w.close(stray) == "no budget reservation for this unit"
    w.append([stray])  # even appended without the guard
    assert book.snapshot("acme")["spendable"] == "10.000000"


def test_actual_cost_above_the_reservation_is_recorded_not_charged() -> None:
    book = BudgetBook(config(credit_limit_usd=Decimal("0.002000")))
    w = FakeWriter(book)
    unit = llm_unit("u1", max_tokens=1000)
    w.reserve(unit)
    w.close(book.settle_event(unit, Decimal("0.005000"), 2500))
    snap = book.snapshot("acme")
    assert (snap["settled"], snap["overrun"], snap["spendable"]) == ("0.002000", "0.003000", "0.000000")
    assert book.session_snapshot("acme", "s1")["tokens_used"] == 1000


def test_malformed_budget_events_are_skipped_not_raised() -> None:
    book = BudgetBook(config())
    bad = NewEvent(type="budget.reserved", payload={"amount_usd": 1.5}, tenant_id="acme", work_unit_id="u1")
    book.apply(bad.to_event(1, 0))  # a raise here would close the log for every writer
    assert book.reservation("u1") is None


# -- limits and scopes -----------------------------------------------------------


def test_tenant_scope_when_spendable_is_short() -> None:
    book = BudgetBook(config(credit_limit_usd=Decimal("0.003000")))
    w = FakeWriter(book)
    assert w.reserve(llm_unit("u1", max_tokens=1000))[0] is None
    reason, guard = w.reserve(llm_unit("u2", max_tokens=1000))
    assert scope_of(reason) == "tenant"
    assert guard is not None and guard.refusal == Refusal("tenant", "usd", "0.003000", "0.001000", "0.002000")
    event = exceeded_event(llm_unit("u2"), guard.refusal)
    assert event.type == "budget.exceeded" and event.idempotency_key == "exceeded:u2"
    assert event.payload == {
        "scope": "tenant",
        "measure": "usd",
        "limit": "0.003000",
        "available": "0.001000",
        "requested": "0.002000",
        "attempt": 1,
    }
    assert REJECT_CODE == "BUDGET_EXCEEDED"


@pytest.mark.parametrize(
    ("case", "limits", "measure"),
    [
        ("the third unit would pass the session's tokens", {"session_max_tokens": 250}, "tokens"),
        ("the third unit would be one invocation too many", {"session_max_llm_invocations": 2}, "invocations"),
        ("the third unit would pass the session's cost", {"session_max_cost_usd": Decimal("0.000500")}, "usd"),
    ],
)
def test_session_limits(case: str, limits: dict[str, Any], measure: str) -> None:
    book = BudgetBook(config(**limits))
    w = FakeWriter(book)
    units = [llm_unit(f"u{i}", max_tokens=100) for i in range(3)]  # 100 tokens, 0.000200 each
    assert w.reserve(units[0])[0] is None
    assert w.reserve(units[1])[0] is None
    reason, guard = w.reserve(units[2])
    assert scope_of(reason) == "session", case
    assert guard is not None and guard.refusal is not None and guard.refusal.measure == measure
    assert w.reserve(llm_unit("other-session", session="s2", max_tokens=100))[0] is None  # sessions are separate
    # Releasing gives the room back; settling keeps what was used.
    w.close(book.release_event(units[0], "failed"))
    assert w.reserve(units[2])[0] is None


def test_unit_scope_when_max_tokens_is_above_the_cap() -> None:
    book = BudgetBook(config(unit_max_tokens=512))
    w = FakeWriter(book)
    reason, guard = w.reserve(llm_unit("big", max_tokens=4096))
    assert scope_of(reason) == "unit"
    assert guard is not None and guard.refusal == Refusal("unit", "tokens", "512", "512", "4096")
    assert w.reserve(llm_unit("ok", max_tokens=512))[0] is None
    assert book.reservation("big") is None


def test_unit_scope_when_max_tokens_is_malformed() -> None:
    book = BudgetBook(config())
    reason, _ = FakeWriter(book).reserve(llm_unit("bad", max_tokens=-3))
    assert scope_of(reason) == "unit"


@pytest.mark.parametrize("reason", [None, "", "unit is no longer waiting for placement", "tenantish budget exceeded"])
def test_scope_of_other_reasons_is_none(reason: str | None) -> None:
    assert scope_of(reason) is None


# -- through the real log --------------------------------------------------------


async def test_real_log_refusal_duplicate_and_replay(tmp_path: Path) -> None:
    book = BudgetBook(config(credit_limit_usd=Decimal("0.002000")))
    log = EventLog(tmp_path / LOG_FILE_NAME, synchronous="NORMAL")
    await log.open()
    try:
        log.add_stager(book.apply)
        unit, other = llm_unit("u1", max_tokens=1000), llm_unit("u2", max_tokens=1000)
        first, second = book.reserve_events(unit), book.reserve_events(unit)  # the same unit twice, racing
        results = await log.append_many(first[0] + second[0], guards=first[1] + second[1])
        assert results[0].created and results[1].duplicate
        events, guards = book.reserve_events(other)
        [refused] = await log.append_many(events, guards=guards)
        assert not refused.created and scope_of(refused.refused) == "tenant"
        settle = book.settle_event(unit, Decimal("0.001000"), 500)
        assert settle is not None
        await log.append(settle, guard=book.guard_open)
        rebuilt = BudgetBook(book.config)
        await replay_all(log, rebuilt.apply)
        assert rebuilt.snapshot("acme") == book.snapshot("acme")
        assert rebuilt.session_snapshot("acme", "s1") == book.session_snapshot("acme", "s1")
    finally:
        await log.close()


def _fields(event: NewEvent) -> dict[str, Any]:
    return {
        "type": event.type,
        "payload": event.payload,
        "tenant_id": event.tenant_id,
        "execution_session_id": event.execution_session_id,
        "work_unit_id": event.work_unit_id,
    }
