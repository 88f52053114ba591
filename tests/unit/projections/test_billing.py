"""Billing fold: line items, prices in force, the successful-attempt policy, wallets and rollups."""

from __future__ import annotations

from decimal import Decimal

from projection_support import Fold

from krakod.log import NewEvent
from krakod.projections.synthetic import (
    claim_expired,
    completed,
    credit,
    failed,
    invocation,
    llm_block,
    pricing,
)

CPU = "workunit_cpu"
LLM = "llm_tokens"


def by_type(lines: list[dict[str, object]]) -> dict[str, list[dict[str, object]]]:
    found: dict[str, list[dict[str, object]]] = {CPU: [], LLM: []}
    for line in lines:
        found[str(line["line_type"])].append(line)
    return found


async def test_a_completion_bills_cpu_seconds_at_the_price_of_the_node_class(fold: Fold) -> None:
    folded = await fold(
        [
            pricing(1, cpu_usd_per_sec_by_class={"datacenter": Decimal("0.001000")}),
            completed("wu-1", 1, "n1", "2.000000", stability_class="community"),
            completed("wu-2", 1, "n2", "2.000000", stability_class="datacenter"),
        ]
    )
    community, datacenter = folded.lines()
    assert (community["amount_usd"], community["unit_price_usd"]) == ("0.001000", "0.000500")
    assert (datacenter["amount_usd"], datacenter["unit_price_usd"]) == ("0.002000", "0.001000")
    assert community["entries"] == [
        {"account": "wallet:t1", "debit_usd": "0.001000", "credit_usd": "0.000000"},
        {"account": "operator:n1", "debit_usd": "0.000000", "credit_usd": "0.000900"},
        {"account": "protocol:fees", "debit_usd": "0.000000", "credit_usd": "0.000100"},
    ]
    assert community["pricing_version"] == 1 and community["quantity"] == "2.000000"


async def test_the_minimum_charge_floors_a_cpu_line(fold: Fold) -> None:
    folded = await fold([pricing(1, min_charge_usd=Decimal("0.000100")), completed("wu-1", 1, "n1", "0.010000")])
    assert [line["amount_usd"] for line in folded.lines()] == ["0.000100"]


async def test_the_split_rounds_half_even_and_the_parts_sum_to_the_amount(fold: Fold) -> None:
    # 0.000010 s x 0.5 $/s = 0.000005; operator 90 % = 4.5 micro-dollars -> 4 (even), protocol gets 1.
    folded = await fold([pricing(1, cpu_usd_per_sec=Decimal("0.500000")), completed("wu-1", 1, "n1", "0.000010")])
    (line,) = folded.lines()
    entries = line["entries"]
    assert line["amount_usd"] == "0.000005"
    assert [e["credit_usd"] for e in entries[1:]] == ["0.000004", "0.000001"]


async def test_an_invocation_waits_for_its_attempt_to_complete(fold: Fold) -> None:
    first = await fold([invocation("wu-1", 1, "n1", 600, 400, tier="large")])
    assert first.lines() == []
    assert first.query("SELECT work_unit_id, attempt FROM billing_pending_llm") == [("wu-1", 1)]

    finished = await fold([completed("wu-1", 1, "n1", "1.000000", llm=llm_block(600, 400, tier="large"))])
    lines = by_type(finished.lines())
    (tokens,) = lines[LLM]
    assert tokens["total_tokens"] == 1000 and tokens["amount_usd"] == "0.002000" and tokens["tier"] == "large"
    assert tokens["seq"] == 1 and tokens["posted_seq"] == 2  # source: the invocation; posted by the completion
    assert finished.query("SELECT COUNT(*) FROM billing_pending_llm") == [(0,)]


async def test_failed_attempts_are_not_billed_by_default(fold: Fold) -> None:
    folded = await fold(
        [
            invocation("wu-1", 1, "n1", 100, 100),
            failed("wu-1", 1, "n1", "5.000000"),
            invocation("wu-1", 2, "n2", 300, 300),
            completed("wu-1", 2, "n2", "1.000000"),
        ]
    )
    lines = by_type(folded.lines())
    assert [(line["attempt"], line["node_id"]) for line in lines[CPU]] == [(2, "n2")]
    assert [(line["attempt"], line["total_tokens"]) for line in lines[LLM]] == [(2, 600)]


async def test_the_policy_switch_bills_failed_attempts(fold: Fold) -> None:
    folded = await fold(
        [
            pricing(1, bill_failed_attempts=True),
            invocation("wu-1", 1, "n1", 100, 100),
            failed("wu-1", 1, "n1", "5.000000"),
            completed("wu-1", 2, "n2", "1.000000"),
        ]
    )
    lines = by_type(folded.lines())
    assert [(line["attempt"], line["outcome"]) for line in lines[CPU]] == [(1, "failed"), (2, "completed")]
    assert [(line["attempt"], line["outcome"]) for line in lines[LLM]] == [(1, "invoked")]


async def test_an_expired_claim_drops_its_pending_invocation(fold: Fold) -> None:
    folded = await fold(
        [
            invocation("wu-1", 1, "n1", 100, 100),
            claim_expired("wu-1", 1, "n1"),
            completed("wu-1", 2, "n2", "1.000000"),
        ]
    )
    assert [line["line_type"] for line in folded.lines()] == [CPU]


async def test_a_late_invocation_of_the_completed_attempt_is_billed_and_a_superseded_one_is_not(fold: Fold) -> None:
    folded = await fold(
        [
            completed("wu-1", 2, "n1", "1.000000"),
            invocation("wu-1", 2, "n1", 100, 100),
            invocation("wu-1", 1, "n9", 500, 500),
        ]
    )
    lines = by_type(folded.lines())
    assert [(line["attempt"], line["posted_seq"]) for line in lines[LLM]] == [(2, 2)]


async def test_tokens_come_from_the_completion_when_the_flags_say_so(fold: Fold) -> None:
    folded = await fold(
        [
            pricing(1, bill_llm_from_workunit_completed=True, bill_llm_from_invocation=False),
            invocation("wu-1", 1, "n1", 100, 100),
            completed("wu-1", 1, "n1", "1.000000", llm=llm_block(100, 100)),
        ]
    )
    (tokens,) = by_type(folded.lines())[LLM]
    assert tokens["seq"] == 3  # the completion is the source


async def test_a_model_price_overrides_the_tier_price(fold: Fold) -> None:
    folded = await fold(
        [
            pricing(1, llm_usd_per_1k_tokens_by_model={"big-1": Decimal("0.030000")}),
            invocation("wu-1", 1, "n1", 1000, 0, model="big-1"),
            completed("wu-1", 1, "n1", "0.000000"),
        ]
    )
    (tokens,) = by_type(folded.lines())[LLM]
    assert tokens["amount_usd"] == "0.030000"


async def test_a_price_change_never_rewrites_history(fold: Fold) -> None:
    folded = await fold(
        [
            pricing(1),
            completed("wu-1", 1, "n1", "1.000000"),
            invocation("wu-2", 1, "n1", 1000, 0),
            pricing(2, cpu_usd_per_sec=Decimal("0.100000"), llm_usd_per_1k_tokens=Decimal("1.000000")),
            completed("wu-2", 1, "n1", "1.000000"),
        ]
    )
    lines = folded.lines()
    assert [(line["line_type"], line["pricing_version"], line["amount_usd"]) for line in lines] == [
        (CPU, 1, "0.000500"),
        (CPU, 2, "0.100000"),
        (LLM, 1, "0.002000"),  # the invocation arrived under version 1
    ]


async def test_a_top_up_is_credited_once_per_client_key(fold: Fold) -> None:
    top_up = credit("acme", "10.000000", "key-1")
    resent_other_key = NewEvent(
        type="wallet.credited",
        payload=dict(top_up.payload),
        idempotency_key="credit-resent-by-a-buggy-gateway",
        tenant_id="acme",
    )
    folded = await fold([top_up, top_up, resent_other_key, credit("acme", "2.500000", "key-2")])
    assert folded.wallet("acme") == (12_500_000, 0, 0)
    assert folded.query("SELECT client_key FROM billing_credits ORDER BY client_key") == [("key-1",), ("key-2",)]


async def test_budget_events_move_the_reserved_amount(fold: Fold) -> None:
    reserve = NewEvent(type="budget.reserved", payload={"attempt": 1, "amount_usd": "1.000000"}, tenant_id="t1")
    settle = NewEvent(type="budget.settled", payload={"amount_usd": "0.2", "reserved_usd": "0.600000"}, tenant_id="t1")
    release = NewEvent(type="budget.released", payload={"amount_usd": "0.100000", "reason": "done"}, tenant_id="t1")
    folded = await fold([reserve, settle, release])
    assert folded.wallet("t1") == (0, 0, 300_000)


async def test_a_malformed_event_is_recorded_and_skipped(fold: Fold) -> None:
    folded = await fold(
        [
            completed("wu-1", 1, "n1", "not-a-number"),
            completed("wu-2", 1, "n1", "1.000000"),
        ]
    )
    assert [line["work_unit_id"] for line in folded.lines()] == ["wu-2"]
    ((event_type, error),) = folded.query("SELECT type, error FROM billing_errors")
    assert event_type == "workunit.completed" and "cpu_seconds" in error


async def test_session_rollups_sum_the_lines_per_type(fold: Fold) -> None:
    folded = await fold(
        [
            invocation("wu-1", 1, "n1", 1000, 500, session="s9"),
            completed("wu-1", 1, "n1", "1.500000", session="s9"),
            completed("wu-2", 1, "n1", "0.500000", session="s9"),
        ]
    )
    rollups = folded.query(
        "SELECT line_type, lines, quantity_micros, tokens_in, tokens_out, amount_micros FROM billing_sessions "
        "WHERE session_id = 's9' ORDER BY line_type"
    )
    assert rollups == [(LLM, 1, 1_500_000, 1000, 500, 3000), (CPU, 2, 2_000_000, 0, 0, 1000)]
