"""The anomaly checker catches every single-micro-dollar discrepancy injected into the books."""

from __future__ import annotations

import shutil
import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest
from projection_support import Fold

from krakod.log import EventLog
from krakod.projections.checker import check_billing
from krakod.projections.synthetic import completed, credit, invocation, pricing

TAMPERS = {
    "a line's amount": ("UPDATE billing_ledger SET amount_micros = amount_micros + 1 WHERE id = 8", "unbalanced_line"),
    "a line's debit": ("UPDATE billing_ledger SET debit_micros = debit_micros + 1 WHERE id = 8", "unbalanced_line"),
    "an operator credit": (
        "UPDATE billing_ledger SET operator_credit_micros = operator_credit_micros - 1 WHERE id = 8",
        "unbalanced_line",
    ),
    "a wallet's debits": ("UPDATE billing_wallets SET debited_micros = debited_micros + 1", "wallet_mismatch"),
    "a wallet's credits": ("UPDATE billing_wallets SET credited_micros = credited_micros + 1", "wallet_mismatch"),
    "an account": (
        "UPDATE billing_accounts SET credit_micros = credit_micros + 1 WHERE account = 'protocol:fees'",
        "account_mismatch",
    ),
    "a session rollup": ("UPDATE billing_sessions SET amount_micros = amount_micros + 1", "session_mismatch"),
    "a deleted line": ("DELETE FROM billing_ledger WHERE id = 8", "missing_line"),
    "a copied line": (
        "INSERT INTO billing_ledger SELECT id + 1000, posted_seq, seq, source_event_id || '-copy', line_type, "
        "outcome, tenant_id, session_id, work_unit_id, attempt, node_id, quantity_micros, tokens_in, tokens_out, "
        "total_tokens, stability_class, provider, model, tier, unit_price_micros, amount_micros, debit_micros, "
        "operator_credit_micros, protocol_credit_micros, pricing_version FROM billing_ledger WHERE id = 8",
        "duplicate_line",
    ),
    "a consistent overcharge": (
        "UPDATE billing_ledger SET amount_micros = amount_micros + 1, debit_micros = debit_micros + 1, "
        "protocol_credit_micros = protocol_credit_micros + 1 WHERE id = 8; "
        "UPDATE billing_wallets SET debited_micros = debited_micros + 1; "
        "UPDATE billing_accounts SET debit_micros = debit_micros + 1 WHERE account = 'wallet:t1'; "
        "UPDATE billing_accounts SET credit_micros = credit_micros + 1 WHERE account = 'protocol:fees'; "
        "UPDATE billing_sessions SET amount_micros = amount_micros + 1 WHERE line_type = 'workunit_cpu'",
        "line_mismatch",
    ),
}


@pytest.fixture
async def books(fold: Fold) -> Path:
    folded = await fold(
        [
            pricing(1),
            credit("t1", "5.000000", "k1"),
            completed("wu-1", 1, "n1", "1.234567"),  # seq 3: ledger id 12
            invocation("wu-2", 1, "n2", 700, 300),
            completed("wu-2", 1, "n2", "0.500000"),  # seq 5
        ]
    )
    return folded.db_path


async def test_clean_books_have_no_findings(books: Path, log: EventLog) -> None:
    findings, through = check_billing(books, log.path)
    assert findings == [] and through == 5


@pytest.mark.parametrize("what", sorted(TAMPERS))
async def test_a_single_micro_dollar_discrepancy_is_caught(
    what: str, books: Path, log: EventLog, tmp_path: Path
) -> None:
    statements, expected_kind = TAMPERS[what]
    tampered = tmp_path / "tampered.sqlite"
    shutil.copy(books, tampered)
    conn = sqlite3.connect(tampered)
    ids = [row[0] for row in conn.execute("SELECT id FROM billing_ledger ORDER BY id")]
    conn.executescript(statements.replace("id = 8", f"id = {ids[0]}"))
    conn.close()
    findings, _ = check_billing(tampered, log.path)
    assert expected_kind in {f.kind for f in findings}, findings


async def test_a_balance_below_the_overdraft_limit_is_reported(fold: Fold, log: EventLog) -> None:
    folded = await fold([pricing(1, overdraft_limit_usd=Decimal("0")), completed("wu-1", 1, "n1", "1.000000")])
    findings, _ = check_billing(folded.db_path, log.path)
    assert [f.kind for f in findings] == ["negative_balance"]
    assert "-0.000500" in findings[0].detail
