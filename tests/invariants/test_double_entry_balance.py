"""Every ledger line is balanced, the books balance, and the checker agrees, after random workloads."""

from __future__ import annotations

import random
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from invariant_support import build_log, fold, query, scratch_dir

from krakod.projections.checker import check_billing
from krakod.projections.synthetic import pricing, random_workload


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(0, 2**32),
    st.sampled_from(["0.90", "0.333333", "0.5", "1", "0"]),
    st.sampled_from(["0", "0.000001", "0.000333"]),
    st.booleans(),
)
def test_debits_equal_credits_after_random_workloads(
    seed: int, operator_share: str, min_charge: str, bill_failed: bool
) -> None:
    rng = random.Random(seed)
    terms = {
        "operator_share": Decimal(operator_share),
        "min_charge_usd": Decimal(min_charge),
        "cpu_usd_per_sec": Decimal("0.000777"),
        "bill_failed_attempts": bill_failed,
    }
    events = [pricing(1, **terms), *random_workload(rng, 30)]
    with scratch_dir() as tmp:
        build_log(tmp / "events.sqlite", [events])
        fold(tmp / "events.sqlite", tmp / "p.sqlite", batch_limit=rng.randint(1, 64))
        unbalanced = query(
            tmp / "p.sqlite",
            "SELECT id FROM billing_ledger WHERE debit_micros != amount_micros "
            "OR operator_credit_micros + protocol_credit_micros != amount_micros",
        )
        assert unbalanced == []
        ((debits, credits),) = query(
            tmp / "p.sqlite", "SELECT SUM(debit_micros), SUM(credit_micros) FROM billing_accounts"
        )
        assert debits == credits
        findings, _ = check_billing(tmp / "p.sqlite", tmp / "events.sqlite")
        assert findings == []
