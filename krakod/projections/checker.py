"""The billing anomaly checker: the ledger against itself, its rollups and the log.

Reads one consistent snapshot of the projections database and reports findings
(kind, detail); an empty list means the books agree. Kinds:
- `unbalanced_line`: a line whose debit is not its amount, or whose credits do not
  sum to it; `amount_mismatch`: amount is not quantity x unit price (with the minimum
  charge of its pricing version); `split_mismatch`: credits not split by that version;
- `duplicate_line`: two lines for one (source event, type) or one (unit, attempt, type);
- `missing_line` / `unexpected_line` / `line_mismatch`: the ledger differs from a fresh
  fold of the log up to the same position (the events themselves);
- `wallet_mismatch`: a wallet is not the fold of its credits and ledger debits;
  `account_mismatch`: an account is not the sum of its postings; `unbalanced_ledger`:
  total debits differ from total credits;
- `session_mismatch`: a session rollup is not the sum of its lines;
- `negative_balance`: a wallet below minus the overdraft limit in force;
- `malformed_event`: an event the fold could not apply (it was skipped).
"""

from __future__ import annotations

import json
import sqlite3
import tempfile
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from krakod.projections.billing import BillingProjection
from krakod.projections.billing_schema import LEDGER_COLUMNS, LEDGER_SELECT, LINE_CPU, PROTOCOL_ACCOUNT
from krakod.projections.money import div_half_even, micros_str, to_micros
from krakod.projections.pricing import DEFAULT_PRICING, Pricing
from krakod.projections.runner import ProjectionError, ProjectionRunner

MAX_FINDINGS_PER_KIND = 100  # a broken database must not produce an unbounded report
_COL = {name: index for index, name in enumerate(LEDGER_COLUMNS)}


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str
    detail: str


class _Findings:
    def __init__(self) -> None:
        self.items: list[Finding] = []
        self._per_kind: dict[str, int] = defaultdict(int)

    def add(self, kind: str, detail: str) -> None:
        self._per_kind[kind] += 1
        if self._per_kind[kind] <= MAX_FINDINGS_PER_KIND:
            self.items.append(Finding(kind, detail))


def _pricings(conn: sqlite3.Connection) -> dict[int, Pricing]:
    found = {0: DEFAULT_PRICING}
    for version, payload in conn.execute("SELECT version, payload FROM billing_pricing"):
        found[version] = Pricing.from_payload(json.loads(payload))
    return found


def _check_lines(conn: sqlite3.Connection, out: _Findings) -> None:
    pricings = _pricings(conn)
    c = _COL
    for row in conn.execute(f"{LEDGER_SELECT} ORDER BY id"):
        line = f"ledger line {row[c['id']]} ({row[c['line_type']]} of event {row[c['source_event_id']]})"
        amount, debit = row[c["amount_micros"]], row[c["debit_micros"]]
        operator, protocol = row[c["operator_credit_micros"]], row[c["protocol_credit_micros"]]
        if debit != amount or operator + protocol != amount or amount < 0:
            out.add(
                "unbalanced_line",
                f"{line}: amount {micros_str(amount)}, debit {micros_str(debit)}, "
                f"credits {micros_str(operator)} + {micros_str(protocol)}",
            )
        pricing = pricings.get(row[c["pricing_version"]])
        if pricing is None:
            out.add("amount_mismatch", f"{line}: unknown pricing version {row[c['pricing_version']]}")
            continue
        quantity, price = row[c["quantity_micros"]], row[c["unit_price_micros"]]
        if row[c["line_type"]] == LINE_CPU:
            expected = max(div_half_even(quantity * price, 1_000_000), to_micros(pricing.min_charge_usd))
        else:
            expected = div_half_even(row[c["total_tokens"]] * price, 1000)
        if expected != amount:
            out.add("amount_mismatch", f"{line}: amount {micros_str(amount)}, expected {micros_str(expected)}")
        expected_operator = div_half_even(amount * to_micros(pricing.operator_share), 1_000_000)
        if operator != expected_operator:
            out.add(
                "split_mismatch",
                f"{line}: operator credit {micros_str(operator)}, expected {micros_str(expected_operator)}",
            )


def _check_duplicates(conn: sqlite3.Connection, out: _Findings) -> None:
    for event_id, line_type, count in conn.execute(
        "SELECT source_event_id, line_type, COUNT(*) FROM billing_ledger "
        "GROUP BY source_event_id, line_type HAVING COUNT(*) > 1"
    ):
        out.add("duplicate_line", f"{count} {line_type} lines for event {event_id}")
    for unit, attempt, line_type, count in conn.execute(
        "SELECT work_unit_id, attempt, line_type, COUNT(*) FROM billing_ledger "
        "GROUP BY work_unit_id, attempt, line_type HAVING COUNT(*) > 1"
    ):
        out.add("duplicate_line", f"{count} {line_type} lines for unit {unit} attempt {attempt}")
    for unit, count in conn.execute(
        "SELECT work_unit_id, COUNT(*) FROM billing_ledger WHERE line_type = ? AND outcome = 'completed' "
        "GROUP BY work_unit_id HAVING COUNT(*) > 1",
        (LINE_CPU,),
    ):
        out.add("duplicate_line", f"unit {unit} is billed as completed {count} times")


def _compare(
    kind: str, what: str, actual: Mapping[str, tuple[int, ...]], expected: Mapping[str, tuple[int, ...]], out: _Findings
) -> None:
    for key in sorted(set(actual) | set(expected)):
        got, want = actual.get(key), expected.get(key)
        if got != want:
            out.add(kind, f"{what} {key}: recorded {got}, fold of the ledger gives {want}")


def _check_totals(conn: sqlite3.Connection, out: _Findings) -> None:
    debits = dict(conn.execute("SELECT tenant_id, SUM(debit_micros) FROM billing_ledger GROUP BY tenant_id"))
    credits = dict(conn.execute("SELECT tenant_id, SUM(amount_micros) FROM billing_credits GROUP BY tenant_id"))
    wallets = {
        t: (c, d) for t, c, d in conn.execute("SELECT tenant_id, credited_micros, debited_micros FROM billing_wallets")
    }
    expected = {t: (credits.get(t, 0), debits.get(t, 0)) for t in set(debits) | set(credits)}
    for tenant in wallets:
        expected.setdefault(tenant, (0, 0))
    _compare("wallet_mismatch", "wallet (credited, debited) of", wallets, expected, out)

    postings: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for account, debit in conn.execute(
        "SELECT 'wallet:' || tenant_id, SUM(debit_micros) FROM billing_ledger GROUP BY tenant_id"
    ):
        postings[account][0] += debit
    for account, credit in conn.execute(
        "SELECT 'operator:' || node_id, SUM(operator_credit_micros) FROM billing_ledger GROUP BY node_id"
    ):
        postings[account][1] += credit
    for (credit,) in conn.execute("SELECT SUM(protocol_credit_micros) FROM billing_ledger HAVING COUNT(*) > 0"):
        postings[PROTOCOL_ACCOUNT][1] += credit
    accounts = {
        a: (d, c) for a, d, c in conn.execute("SELECT account, debit_micros, credit_micros FROM billing_accounts")
    }
    _compare("account_mismatch", "account (debit, credit)", accounts, {a: tuple(v) for a, v in postings.items()}, out)
    total_debit = sum(d for d, _ in accounts.values())
    total_credit = sum(c for _, c in accounts.values())
    if total_debit != total_credit:
        out.add(
            "unbalanced_ledger",
            f"accounts hold {micros_str(total_debit)} of debits and {micros_str(total_credit)} of credits",
        )

    rollups = {
        f"{s}/{t}": tuple(v)
        for s, t, *v in conn.execute(
            "SELECT session_id, line_type, lines, quantity_micros, tokens_in, tokens_out, total_tokens, amount_micros "
            "FROM billing_sessions"
        )
    }
    sums = {
        f"{s}/{t}": tuple(v)
        for s, t, *v in conn.execute(
            "SELECT session_id, line_type, COUNT(*), SUM(quantity_micros), SUM(tokens_in), SUM(tokens_out), "
            "SUM(total_tokens), SUM(amount_micros) FROM billing_ledger GROUP BY session_id, line_type"
        )
    }
    _compare("session_mismatch", "session rollup (lines, quantity, in, out, total, amount)", rollups, sums, out)


def _check_balances(conn: sqlite3.Connection, out: _Findings) -> None:
    row = conn.execute("SELECT payload FROM billing_pricing ORDER BY seq DESC LIMIT 1").fetchone()
    pricing = DEFAULT_PRICING if row is None else Pricing.from_payload(json.loads(row[0]))
    if pricing.overdraft_limit_usd is None:
        return
    floor = -to_micros(pricing.overdraft_limit_usd)
    for tenant, credited, debited in conn.execute(
        "SELECT tenant_id, credited_micros, debited_micros FROM billing_wallets ORDER BY tenant_id"
    ):
        if credited - debited < floor:
            out.add(
                "negative_balance",
                f"wallet of {tenant} is {micros_str(credited - debited)}, "
                f"below the overdraft limit of {micros_str(-floor)}",
            )


def _check_errors(conn: sqlite3.Connection, out: _Findings) -> None:
    for seq, event_id, type_, error in conn.execute("SELECT seq, event_id, type, error FROM billing_errors"):
        out.add("malformed_event", f"{type_} {event_id} at seq {seq} was not billed: {error}")


def _rows(conn: sqlite3.Connection) -> Iterator[tuple[Any, ...]]:
    yield from conn.execute(f"{LEDGER_SELECT} ORDER BY id")


def _check_against_log(conn: sqlite3.Connection, log_path: Path, through_seq: int, out: _Findings) -> None:
    """Fold the log again into a scratch database up to `through_seq`; merge-compare the ledgers by id."""
    with tempfile.TemporaryDirectory(prefix="krako-check-") as scratch:
        runner = ProjectionRunner(Path(scratch) / "billing.sqlite", log_path, [BillingProjection()], synchronous="OFF")
        runner.open()
        try:
            runner.catch_up(through_seq)
            _merge_compare(_rows(conn), _rows(runner.conn), out)
        finally:
            runner.close()


def _merge_compare(live: Iterator[tuple[Any, ...]], fresh: Iterator[tuple[Any, ...]], out: _Findings) -> None:
    got, want = next(live, None), next(fresh, None)
    while got is not None or want is not None:
        if want is None or (got is not None and got[0] < want[0]):
            assert got is not None
            out.add("unexpected_line", f"ledger line {got[0]} ({got[4]} of event {got[3]}) has no source in the log")
            got = next(live, None)
        elif got is None or want[0] < got[0]:
            out.add("missing_line", f"ledger line {want[0]} ({want[4]} of event {want[3]}, seq {want[2]}) is missing")
            want = next(fresh, None)
        else:
            if got != want:
                diff = [name for name, a, b in zip(LEDGER_COLUMNS, got, want, strict=True) if a != b]
                out.add("line_mismatch", f"ledger line {got[0]} differs from the log in {', '.join(diff)}")
            got, want = next(live, None), next(fresh, None)


def check_billing(db_path: Path, log_path: Path, *, against_log: bool = True) -> tuple[list[Finding], int]:
    """Every finding about the billing state, and the seq it was checked through (blocking)."""
    out = _Findings()
    conn = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA query_only=1")
        conn.execute("BEGIN")
        row = conn.execute("SELECT seq FROM projection_positions WHERE name = ?", (BillingProjection.name,)).fetchone()
        through_seq = 0 if row is None else int(row[0])
        _check_lines(conn, out)
        _check_duplicates(conn, out)
        _check_totals(conn, out)
        _check_balances(conn, out)
        _check_errors(conn, out)
        if against_log:
            _check_against_log(conn, log_path, through_seq, out)
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        raise ProjectionError(f"checking billing in {db_path}: {exc}") from exc
    finally:
        conn.close()
    return out.items, through_seq
