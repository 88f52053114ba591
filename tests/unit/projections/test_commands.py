"""Top-up validation, pricing from the environment, money rounding."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from krakod.projections.commands import credit_event, pricing_event_for
from krakod.projections.money import div_half_even, micros_str, parse_micros, split_micros, to_micros
from krakod.projections.pricing import Pricing, pricing_from_env


def test_a_top_up_event_carries_the_idempotency_key_of_the_contract() -> None:
    event = credit_event("acme", "12.5", "invoice-7")
    assert event.type == "wallet.credited" and event.idempotency_key == "credit:acme:invoice-7"
    assert event.payload == {"tenant_id": "acme", "amount_usd": "12.500000", "client_key": "invoice-7"}


@pytest.mark.parametrize(
    ("tenant", "amount", "key", "message"),
    [
        ("acme", "0", "k", "greater than 0"),
        ("acme", "-1", "k", "greater than 0"),
        ("acme", "abc", "k", "not a decimal number"),
        ("acme", "NaN", "k", "finite"),
        ("acme", "1.0000001", "k", "more than 6 decimal places"),
        ("acme", "2000000000", "k", "at most"),
        ("", "1", "k", "tenant_id is required"),
        ("acme", "1", "", "client_key is required"),
        ("acme", "1", "has space", "spaces"),
    ],
)
def test_a_bad_top_up_is_refused_with_a_clear_message(tenant: str, amount: str, key: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        credit_event(tenant, amount, key)


def test_pricing_from_an_empty_environment_is_the_documented_default() -> None:
    config = pricing_from_env({})
    assert config.cpu_usd_per_sec == Decimal("0.000500") and config.llm_usd_per_1k_tokens == Decimal("0.002000")
    assert (config.bill_llm_from_workunit_completed, config.bill_llm_from_invocation) == (False, True)
    assert config.operator_share == Decimal("0.90") and config.protocol_share == Decimal("0.10")


def test_pricing_reads_every_knob_and_names_a_bad_one() -> None:
    config = pricing_from_env(
        {
            "KRAKO_CPU_USD_PER_SEC": "0.001",
            "KRAKO_CPU_USD_PER_SEC_DATACENTER": "0.002",
            "KRAKO_LLM_USD_PER_1K_TOKENS_LARGE": "0.01",
            "KRAKO_LLM_USD_PER_1K_TOKENS_BY_MODEL": '{"gpt-x": "0.05"}',
            "KRAKO_BILL_LLM_FROM_WORKUNIT_COMPLETED": "1",
            "KRAKO_BILL_LLM_FROM_INVOCATION": "0",
            "KRAKO_SPLIT_OPERATOR": "0.75",
            "KRAKO_MIN_CHARGE_USD": "0.0001",
        }
    )
    assert config.cpu_price("datacenter") == Decimal("0.002") and config.cpu_price("community") == Decimal("0.001")
    assert config.llm_price("large", "m") == Decimal("0.01") and config.llm_price("small", "gpt-x") == Decimal("0.05")
    assert config.llm_from_workunit_completed and not config.llm_from_invocation
    with pytest.raises(ValueError, match="KRAKO_BILL_LLM_FROM_INVOCATION"):
        pricing_from_env({"KRAKO_BILL_LLM_FROM_INVOCATION": "maybe"})
    with pytest.raises(ValueError, match="KRAKO_CPU_USD_PER_SEC"):
        pricing_from_env({"KRAKO_CPU_USD_PER_SEC": "0.0000001"})


def test_both_llm_flags_off_still_bills_tokens_once_from_invocations() -> None:
    config = Pricing(bill_llm_from_workunit_completed=False, bill_llm_from_invocation=False)
    assert config.llm_from_invocation and not config.llm_from_workunit_completed


def test_a_pricing_event_round_trips_and_is_skipped_when_unchanged() -> None:
    event = pricing_event_for(pricing_from_env({}), None)
    assert event is not None
    decoded = Pricing.from_payload(event.payload)
    assert decoded.version == 1 and decoded.same_terms(pricing_from_env({}))
    assert pricing_event_for(pricing_from_env({}), decoded) is None


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=10**12), st.integers(min_value=0, max_value=10**7))
def test_integer_rounding_matches_decimal_half_even(quantity_micros: int, price_micros: int) -> None:
    exact = Decimal(quantity_micros) / 10**6 * Decimal(price_micros) / 10**6
    expected = exact.quantize(Decimal("0.000001"), rounding=ROUND_HALF_EVEN)
    assert div_half_even(quantity_micros * price_micros, 10**6) == to_micros(expected)


@pytest.mark.parametrize(
    ("text", "micros"),
    [("0.0000005", 0), ("0.0000015", 2), ("0.0000025", 2), ("1.0000035", 1_000_004), ("2.000000", 2_000_000)],
)
def test_more_than_six_places_round_half_even(text: str, micros: int) -> None:
    assert parse_micros(text, field="x") == micros


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=10**12), st.integers(min_value=0, max_value=10**6))
def test_a_split_always_sums_to_the_whole(amount: int, share_micros: int) -> None:
    operator, protocol = split_micros(amount, Decimal(share_micros) / 10**6)
    assert operator + protocol == amount and 0 <= operator <= amount
    assert micros_str(amount) == f"{Decimal(amount) / 10**6:.6f}"
