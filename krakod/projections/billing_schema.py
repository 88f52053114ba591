"""Tables of the billing projection and the canonical JSON of a ledger line.

Amounts are INTEGER micro-dollars (`*_micros`): exact, and exact under SQL SUM.
A ledger line is one balanced journal entry: the tenant's wallet account is
debited `amount`; the node operator's payout account and the protocol fee
account are credited `operator_credit + protocol_credit == amount`.
"""

from __future__ import annotations

from typing import Any

from krakod.projections.money import micros_str
from krakod.projections.runner import View

LINE_CPU = "workunit_cpu"
LINE_LLM = "llm_tokens"
LINE_INDEX = {LINE_CPU: 0, LINE_LLM: 1}  # ledger id = posted_seq * LINES_PER_SEQ + index
LINES_PER_SEQ = 4
PROTOCOL_ACCOUNT = "protocol:fees"
UNIT_OF = {LINE_CPU: "cpu_second", LINE_LLM: "1k_tokens"}

SCHEMA = """
CREATE TABLE IF NOT EXISTS billing_ledger (
    id                     INTEGER PRIMARY KEY,  -- posted_seq * 4 + line index: same for every replay
    posted_seq             INTEGER NOT NULL,     -- the event whose fold posted the line
    seq                    INTEGER NOT NULL,     -- the source event (of the quantities)
    source_event_id        TEXT NOT NULL,
    line_type              TEXT NOT NULL,
    outcome                TEXT NOT NULL,        -- completed | failed | invoked
    tenant_id              TEXT NOT NULL,
    session_id             TEXT NOT NULL,
    work_unit_id           TEXT NOT NULL,
    attempt                INTEGER NOT NULL,
    node_id                TEXT NOT NULL,
    quantity_micros        INTEGER NOT NULL,     -- cpu seconds, or thousands of tokens, in millionths
    tokens_in              INTEGER NOT NULL,
    tokens_out             INTEGER NOT NULL,
    total_tokens           INTEGER NOT NULL,
    stability_class        TEXT,                 -- workunit_cpu lines
    provider               TEXT,                 -- llm_tokens lines
    model                  TEXT,
    tier                   TEXT,
    unit_price_micros      INTEGER NOT NULL,
    amount_micros          INTEGER NOT NULL,
    debit_micros           INTEGER NOT NULL,     -- to wallet:{tenant_id}
    operator_credit_micros INTEGER NOT NULL,     -- to operator:{node_id}
    protocol_credit_micros INTEGER NOT NULL,     -- to protocol:fees
    pricing_version        INTEGER NOT NULL,
    UNIQUE (source_event_id, line_type)
);
CREATE INDEX IF NOT EXISTS billing_ledger_by_unit ON billing_ledger (work_unit_id);
CREATE INDEX IF NOT EXISTS billing_ledger_by_tenant ON billing_ledger (tenant_id, id);
CREATE TABLE IF NOT EXISTS billing_wallets (
    tenant_id        TEXT PRIMARY KEY,
    credited_micros  INTEGER NOT NULL,
    debited_micros   INTEGER NOT NULL,
    reserved_micros  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS billing_credits (
    tenant_id        TEXT NOT NULL,
    client_key       TEXT NOT NULL,
    seq              INTEGER NOT NULL,
    event_id         TEXT NOT NULL,
    amount_micros    INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, client_key)
);
CREATE TABLE IF NOT EXISTS billing_accounts (
    account          TEXT PRIMARY KEY,
    debit_micros     INTEGER NOT NULL,
    credit_micros    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS billing_sessions (
    session_id       TEXT NOT NULL,
    line_type        TEXT NOT NULL,
    tenant_id        TEXT NOT NULL,
    lines            INTEGER NOT NULL,
    quantity_micros  INTEGER NOT NULL,
    tokens_in        INTEGER NOT NULL,
    tokens_out       INTEGER NOT NULL,
    total_tokens     INTEGER NOT NULL,
    amount_micros    INTEGER NOT NULL,
    PRIMARY KEY (session_id, line_type)
);
CREATE TABLE IF NOT EXISTS billing_pricing (
    version          INTEGER PRIMARY KEY,
    seq              INTEGER NOT NULL,
    payload          TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS billing_pending_llm (
    work_unit_id     TEXT NOT NULL,
    attempt          INTEGER NOT NULL,
    seq              INTEGER NOT NULL,
    event_id         TEXT NOT NULL,
    tenant_id        TEXT NOT NULL,
    session_id       TEXT NOT NULL,
    node_id          TEXT NOT NULL,
    provider         TEXT NOT NULL,
    model            TEXT NOT NULL,
    tier             TEXT NOT NULL,
    tokens_in        INTEGER NOT NULL,
    tokens_out       INTEGER NOT NULL,
    total_tokens     INTEGER NOT NULL,
    pricing_version  INTEGER NOT NULL,
    PRIMARY KEY (work_unit_id, attempt)
);
CREATE TABLE IF NOT EXISTS billing_errors (
    seq              INTEGER PRIMARY KEY,
    event_id         TEXT NOT NULL,
    type             TEXT NOT NULL,
    error            TEXT NOT NULL
);
"""

LEDGER_COLUMNS = (
    "id",
    "posted_seq",
    "seq",
    "source_event_id",
    "line_type",
    "outcome",
    "tenant_id",
    "session_id",
    "work_unit_id",
    "attempt",
    "node_id",
    "quantity_micros",
    "tokens_in",
    "tokens_out",
    "total_tokens",
    "stability_class",
    "provider",
    "model",
    "tier",
    "unit_price_micros",
    "amount_micros",
    "debit_micros",
    "operator_credit_micros",
    "protocol_credit_micros",
    "pricing_version",
)
LEDGER_INSERT = (
    f"INSERT INTO billing_ledger ({', '.join(LEDGER_COLUMNS)}) VALUES ({', '.join('?' * len(LEDGER_COLUMNS))})"
)
LEDGER_SELECT = f"SELECT {', '.join(LEDGER_COLUMNS)} FROM billing_ledger"

# Each takes (first id, last id) of the lines a batch inserted and adds them to the totals.
ROLLUP_STATEMENTS = (
    "INSERT INTO billing_wallets (tenant_id, credited_micros, debited_micros, reserved_micros) "
    "SELECT tenant_id, 0, SUM(debit_micros), 0 FROM billing_ledger WHERE id BETWEEN ? AND ? GROUP BY tenant_id "
    "ON CONFLICT(tenant_id) DO UPDATE SET debited_micros = debited_micros + excluded.debited_micros",
    "INSERT INTO billing_accounts (account, debit_micros, credit_micros) "
    "SELECT 'wallet:' || tenant_id, SUM(debit_micros), 0 FROM billing_ledger WHERE id BETWEEN ? AND ? "
    "GROUP BY tenant_id "
    "ON CONFLICT(account) DO UPDATE SET debit_micros = debit_micros + excluded.debit_micros",
    "INSERT INTO billing_accounts (account, debit_micros, credit_micros) "
    "SELECT 'operator:' || node_id, 0, SUM(operator_credit_micros) FROM billing_ledger WHERE id BETWEEN ? AND ? "
    "GROUP BY node_id "
    "ON CONFLICT(account) DO UPDATE SET credit_micros = credit_micros + excluded.credit_micros",
    "INSERT INTO billing_accounts (account, debit_micros, credit_micros) "
    f"SELECT '{PROTOCOL_ACCOUNT}', 0, SUM(protocol_credit_micros) FROM billing_ledger WHERE id BETWEEN ? AND ? "
    "HAVING COUNT(*) > 0 "
    "ON CONFLICT(account) DO UPDATE SET credit_micros = credit_micros + excluded.credit_micros",
    "INSERT INTO billing_sessions (session_id, line_type, tenant_id, lines, quantity_micros, tokens_in, tokens_out, "
    "total_tokens, amount_micros) "
    "SELECT session_id, line_type, MIN(tenant_id), COUNT(*), SUM(quantity_micros), SUM(tokens_in), SUM(tokens_out), "
    "SUM(total_tokens), SUM(amount_micros) FROM billing_ledger WHERE id BETWEEN ? AND ? "
    "GROUP BY session_id, line_type ON CONFLICT(session_id, line_type) DO UPDATE SET "
    "lines = lines + excluded.lines, quantity_micros = quantity_micros + excluded.quantity_micros, "
    "tokens_in = tokens_in + excluded.tokens_in, tokens_out = tokens_out + excluded.tokens_out, "
    "total_tokens = total_tokens + excluded.total_tokens, amount_micros = amount_micros + excluded.amount_micros",
)
# (tenant, credited change, reserved change): top-ups and budget reservations of a batch.
WALLET_DELTA_UPSERT = (
    "INSERT INTO billing_wallets (tenant_id, credited_micros, debited_micros, reserved_micros) VALUES (?, ?, 0, ?) "
    "ON CONFLICT(tenant_id) DO UPDATE SET credited_micros = credited_micros + excluded.credited_micros, "
    "reserved_micros = reserved_micros + excluded.reserved_micros"
)

VIEWS: dict[str, View] = {
    "billing.ledger": (("billing_ledger", "id"),),
    "billing.wallets": (
        ("billing_wallets", "tenant_id"),
        ("billing_credits", "tenant_id, client_key"),
        ("billing_accounts", "account"),
    ),
    "billing.sessions": (("billing_sessions", "session_id, line_type"),),
    "billing.state": (
        ("billing_pricing", "version"),
        ("billing_pending_llm", "work_unit_id, attempt"),
        ("billing_errors", "seq"),
    ),
}


def ledger_line(row: tuple[Any, ...]) -> dict[str, Any]:
    """The public form of a ledger row (a `LEDGER_SELECT` tuple): money and quantities as strings."""
    r = dict(zip(LEDGER_COLUMNS, row, strict=True))
    return {
        "id": r["id"],
        "posted_seq": r["posted_seq"],
        "seq": r["seq"],
        "source_event_id": r["source_event_id"],
        "line_type": r["line_type"],
        "outcome": r["outcome"],
        "tenant_id": r["tenant_id"],
        "session_id": r["session_id"],
        "work_unit_id": r["work_unit_id"],
        "attempt": r["attempt"],
        "node_id": r["node_id"],
        "quantity": micros_str(r["quantity_micros"]),
        "unit": UNIT_OF[r["line_type"]],
        "tokens_in": r["tokens_in"],
        "tokens_out": r["tokens_out"],
        "total_tokens": r["total_tokens"],
        "stability_class": r["stability_class"] or "",
        "provider": r["provider"] or "",
        "model": r["model"] or "",
        "tier": r["tier"] or "",
        "unit_price_usd": micros_str(r["unit_price_micros"]),
        "amount_usd": micros_str(r["amount_micros"]),
        "pricing_version": r["pricing_version"],
        "entries": [
            {
                "account": f"wallet:{r['tenant_id']}",
                "debit_usd": micros_str(r["debit_micros"]),
                "credit_usd": "0.000000",
            },
            {
                "account": f"operator:{r['node_id']}",
                "debit_usd": "0.000000",
                "credit_usd": micros_str(r["operator_credit_micros"]),
            },
            {
                "account": PROTOCOL_ACCOUNT,
                "debit_usd": "0.000000",
                "credit_usd": micros_str(r["protocol_credit_micros"]),
            },
        ],
    }
