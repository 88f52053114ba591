"""Billing: split line items on a double-entry ledger, wallets and session rollups.

A pure fold over the log. Line items:
- `workunit_cpu` from `workunit.completed`: cpu_seconds x CPU price of the node's
  stability class, floored at `min_charge_usd`;
- `llm_tokens`: total_tokens / 1,000 x price of the model, else of the tier.

Only the successful attempt of a unit is billed (unless the pricing in force says
`bill_failed_attempts`). An `llm.invocation.completed` therefore waits, as a pending
row, until `workunit.completed` of the same attempt posts it; a failed, expired or
cancelled attempt drops it. An invocation arriving after its unit completed is posted
at once. Tokens are billed at most once per (unit, attempt): from the invocation when
the pricing says so, otherwise from the `llm` block of the completion.

Every decision uses the pricing in force at the event's seq (a pending invocation keeps
the version it arrived under). Ledger ids derive from the posting seq, so batch
boundaries, restarts and replays give identical rows. A second completion of a unit, a
second line for the same attempt, or a second top-up with the same client key never
posts anything.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from krakod.log.types import canonical_json
from krakod.projections.billing_schema import (
    LEDGER_INSERT,
    LINE_CPU,
    LINE_INDEX,
    LINE_LLM,
    LINES_PER_SEQ,
    ROLLUP_STATEMENTS,
    SCHEMA,
    VIEWS,
    WALLET_DELTA_UPSERT,
)
from krakod.projections.money import div_half_even, parse_micros, to_micros
from krakod.projections.pricing import DEFAULT_PRICING, Pricing
from krakod.projections.runner import FOLD_ERRORS, Item, View

_MICROS = 1_000_000
_IN_CHUNK = 500  # host parameters per IN (...) lookup
_NO_LINES: frozenset[tuple[int, str, str]] = frozenset()
_UNIT_TYPES = frozenset({"workunit.completed", "workunit.failed", "llm.invocation.completed"})

# Pending invocation: seq, event_id, tenant, session, node, provider, model, tier,
# tokens_in, tokens_out, total_tokens, pricing_version.
Pending = tuple[int, str, str, str, str, str, str, str, int, int, int, int]


@dataclass(frozen=True, slots=True)
class Rates:
    """A pricing in integer micro-dollars, for the hot path."""

    version: int
    cpu: int
    cpu_by_class: Mapping[str, int]
    llm: int
    llm_by_tier: Mapping[str, int]
    llm_by_model: Mapping[str, int]
    min_charge: int
    operator_share: int  # millionths

    @classmethod
    def of(cls, pricing: Pricing) -> Rates:
        return cls(
            version=pricing.version,
            cpu=to_micros(pricing.cpu_usd_per_sec),
            cpu_by_class={k: to_micros(v) for k, v in pricing.cpu_usd_per_sec_by_class.items()},
            llm=to_micros(pricing.llm_usd_per_1k_tokens),
            llm_by_tier={k: to_micros(v) for k, v in pricing.llm_usd_per_1k_tokens_by_tier.items()},
            llm_by_model={k: to_micros(v) for k, v in pricing.llm_usd_per_1k_tokens_by_model.items()},
            min_charge=to_micros(pricing.min_charge_usd),
            operator_share=to_micros(pricing.operator_share),
        )

    def llm_price(self, tier: str, model: str) -> int:
        price = self.llm_by_model.get(model)
        return price if price is not None else self.llm_by_tier.get(tier, self.llm)


def _int(value: object, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{field} must be a non-negative integer, got {value!r}")
    return value


def _llm_labels(block: Mapping[str, Any]) -> tuple[str, str, str]:
    """provider, model, tier of an invocation payload or a completion's llm block."""
    return str(block.get("provider") or ""), str(block.get("model") or ""), str(block.get("tier") or "")


def _tokens(block: Mapping[str, Any]) -> tuple[int, int, int]:
    tokens_in = _int(block.get("tokens_in", 0), "tokens_in")
    tokens_out = _int(block.get("tokens_out", 0), "tokens_out")
    total = block.get("total_tokens")
    return tokens_in, tokens_out, tokens_in + tokens_out if total is None else _int(total, "total_tokens")


class BillingProjection:
    """Ledger, wallets, accounts and session rollups (see the module docstring)."""

    name = "billing"
    event_types = frozenset(
        {
            "billing.pricing.updated",
            "wallet.credited",
            "workunit.completed",
            "workunit.failed",
            "workunit.claim.expired",
            "workunit.cancelled",
            "llm.invocation.completed",
            "budget.reserved",
            "budget.settled",
            "budget.released",
        }
    )
    views: Mapping[str, View] = VIEWS

    def __init__(self) -> None:
        self._handlers = {
            "billing.pricing.updated": self._on_pricing,
            "wallet.credited": self._on_credit,
            "workunit.completed": self._on_completed,
            "workunit.failed": self._on_failed,
            "workunit.claim.expired": self._on_expired,
            "workunit.cancelled": self._on_cancelled,
            "llm.invocation.completed": self._on_invocation,
            "budget.reserved": self._on_budget,
            "budget.settled": self._on_budget,
            "budget.released": self._on_budget,
        }
        self._conn: sqlite3.Connection | None = None
        self._reset_memory()

    def _reset_memory(self) -> None:
        self.pricing: Pricing = DEFAULT_PRICING
        self._rates: dict[int, Rates] = {0: Rates.of(DEFAULT_PRICING)}
        self._pricings: dict[int, Pricing] = {0: DEFAULT_PRICING}
        self._pending: dict[str, dict[int, Pending]] = {}
        self._begin_batch()

    def _begin_batch(self) -> None:
        self._rows: list[tuple[Any, ...]] = []
        self._unit_lines: dict[str, set[tuple[int, str, str]]] = {}
        self._wallet_deltas: dict[str, list[int]] = {}  # tenant -> [credited, reserved] changes
        self._dirty_pending: set[tuple[str, int]] = set()
        self._new_credits: dict[tuple[str, str], tuple[int, str, int]] = {}
        self._new_pricings: list[tuple[int, int, str]] = []
        self._errors: list[tuple[int, str, str, str]] = []

    # -- Projection protocol -------------------------------------------------------

    def create_schema(self, conn: sqlite3.Connection) -> None:
        conn.executescript(SCHEMA)

    def load(self, conn: sqlite3.Connection) -> None:
        self._reset_memory()
        for version, payload in conn.execute("SELECT version, payload FROM billing_pricing ORDER BY seq"):
            pricing = Pricing.from_payload(json.loads(payload))
            self._pricings[version] = pricing
            self._rates[version] = Rates.of(pricing)
            self.pricing = pricing
        for row in conn.execute("SELECT * FROM billing_pending_llm"):
            self._pending.setdefault(row[0], {})[row[1]] = tuple(row[2:])  # type: ignore[assignment]

    def apply(self, conn: sqlite3.Connection, items: Sequence[Item]) -> None:
        self._conn = conn
        self._begin_batch()
        self._prefetch_units(conn, items)
        handlers = self._handlers
        for item in items:
            try:
                handlers[item[2]](item)
            except FOLD_ERRORS as exc:
                self._errors.append((item[0], item[1], item[2], f"{type(exc).__name__}: {exc}"))
        self._flush(conn)

    # -- handlers --------------------------------------------------------------------

    def _on_pricing(self, item: Item) -> None:
        pricing = Pricing.from_payload(item[7])
        self.pricing = pricing
        self._pricings[pricing.version] = pricing
        self._rates[pricing.version] = Rates.of(pricing)
        self._new_pricings.append((pricing.version, item[0], canonical_json(pricing.to_payload())))

    def _on_credit(self, item: Item) -> None:
        seq, event_id, _, _, envelope_tenant, _, _, payload = item
        tenant = str(payload.get("tenant_id") or envelope_tenant)
        client_key = payload.get("client_key")
        if not tenant or not isinstance(client_key, str) or not client_key:
            raise ValueError("wallet.credited needs tenant_id and client_key")
        amount = parse_micros(payload.get("amount_usd"), field="amount_usd")
        if amount <= 0:
            raise ValueError(f"amount_usd must be positive, got {payload.get('amount_usd')!r}")
        key = (tenant, client_key)
        if key in self._new_credits or self._credit_exists(key):
            return  # the same top-up again: credited once
        self._new_credits[key] = (seq, event_id, amount)
        self._wallet_delta(tenant)[0] += amount

    def _on_budget(self, item: Item) -> None:
        _, _, type_, _, tenant, _, _, payload = item
        field = "reserved_usd" if type_ == "budget.settled" else "amount_usd"
        amount = parse_micros(payload.get(field, "0"), field=field)
        self._wallet_delta(tenant)[1] += amount if type_ == "budget.reserved" else -amount

    def _on_completed(self, item: Item) -> None:
        seq, event_id, _, _, tenant, session, unit, payload = item
        if not unit:
            raise ValueError("workunit.completed needs work_unit_id")
        attempt = _int(payload.get("attempt"), "attempt")
        lines = self._unit_lines.get(unit, _NO_LINES)
        if lines and any(t == LINE_CPU and o == "completed" for _, t, o in lines):
            return  # a unit completes once: a second completion is never billed
        cpu_micros = parse_micros(payload.get("cpu_seconds", "0"), field="cpu_seconds")
        node = str(payload.get("node_id") or "")
        attempts = self._pending.get(unit)
        pending = attempts.get(attempt) if attempts else None
        block = payload.get("llm")
        version = self.pricing.version
        if (
            pending is None
            and block
            and self.pricing.llm_from_workunit_completed
            and not (lines and any(a == attempt and t == LINE_LLM for a, t, _ in lines))
        ):
            # Validated before anything is posted, like every field of the event.
            pending = (seq, event_id, tenant, session, node, *_llm_labels(block), *_tokens(block), version)
        self._post_cpu(item, attempt, node, "completed", cpu_micros, self._rates[version])
        if pending is not None:
            self._post_llm(seq, pending, unit, attempt, "completed")
        if unit in self._pending:
            self._drop_pending(unit, None)  # other attempts of a completed unit failed: not billed

    def _on_failed(self, item: Item) -> None:
        unit, payload = item[6], item[7]
        if not unit:
            raise ValueError("workunit.failed needs work_unit_id")
        attempt = _int(payload.get("attempt"), "attempt")
        if not self.pricing.bill_failed_attempts:
            self._drop_pending(unit, attempt)
            return
        cpu_micros = parse_micros(payload.get("cpu_seconds", "0"), field="cpu_seconds")
        if not any(a == attempt and t == LINE_CPU for a, t, _ in self._lines(unit)):
            node = str(payload.get("node_id") or "")
            self._post_cpu(item, attempt, node, "failed", cpu_micros, self._rates[self.pricing.version])
        self._settle_pending(item[0], unit, attempt, "failed")

    def _on_expired(self, item: Item) -> None:
        unit = item[6]
        if not unit:
            raise ValueError("workunit.claim.expired needs work_unit_id")
        attempt = _int(item[7].get("attempt"), "attempt")
        if self.pricing.bill_failed_attempts:
            self._settle_pending(item[0], unit, attempt, "failed")
        else:
            self._drop_pending(unit, attempt)

    def _on_cancelled(self, item: Item) -> None:
        if item[6]:
            self._drop_pending(item[6], None)

    def _on_invocation(self, item: Item) -> None:
        seq, event_id, _, _, tenant, session, unit, payload = item
        pricing = self.pricing
        if not pricing.llm_from_invocation:
            return  # the pricing in force bills tokens from workunit.completed
        if not unit:
            raise ValueError("llm.invocation.completed needs work_unit_id")
        attempt = _int(payload.get("attempt"), "attempt")
        node = str(payload.get("node_id") or "")
        source = (seq, event_id, tenant, session, node, *_llm_labels(payload), *_tokens(payload), pricing.version)
        lines = self._unit_lines.get(unit, _NO_LINES)
        if lines and any(a == attempt and t == LINE_LLM for a, t, _ in lines):
            return  # this attempt's tokens are billed already
        completed = next((a for a, t, o in lines if t == LINE_CPU and o == "completed"), None) if lines else None
        if completed == attempt or pricing.bill_failed_attempts:
            self._post_llm(seq, source, unit, attempt, "completed" if completed == attempt else "invoked")
        elif completed is None:
            attempts = self._pending.setdefault(unit, {})
            if attempt not in attempts:  # a resent invocation keeps the first
                attempts[attempt] = source
                self._dirty_pending.add((unit, attempt))
        # else: a superseded attempt of a unit that completed: not billed

    # -- posting ---------------------------------------------------------------------

    def _post_cpu(self, item: Item, attempt: int, node: str, outcome: str, cpu_micros: int, rates: Rates) -> None:
        seq, event_id, _, _, tenant, session, unit, payload = item
        klass = str(payload.get("stability_class") or "")
        price = rates.cpu_by_class.get(klass, rates.cpu)
        amount = max(div_half_even(cpu_micros * price, _MICROS), rates.min_charge)
        operator = div_half_even(amount * rates.operator_share, _MICROS)
        self._rows.append(
            (
                seq * LINES_PER_SEQ + LINE_INDEX[LINE_CPU],
                seq,
                seq,
                event_id,
                LINE_CPU,
                outcome,
                tenant,
                session,
                unit or "",
                attempt,
                node,
                cpu_micros,
                0,
                0,
                0,
                klass or None,
                None,
                None,
                None,
                price,
                amount,
                amount,
                operator,
                amount - operator,
                rates.version,
            )
        )
        self._lines(unit or "").add((attempt, LINE_CPU, outcome))

    def _post_llm(self, posted_seq: int, source: Pending, unit: str, attempt: int, outcome: str) -> None:
        """Post the tokens of `source` (an invocation, or a completion's llm block) at its pricing version."""
        seq, event_id, tenant, session, node, provider, model, tier, tokens_in, tokens_out, total, version = source
        rates = self._rates[version]
        price = rates.llm_price(tier, model)
        amount = div_half_even(total * price, 1000)
        operator = div_half_even(amount * rates.operator_share, _MICROS)
        self._rows.append(
            (
                posted_seq * LINES_PER_SEQ + LINE_INDEX[LINE_LLM],
                posted_seq,
                seq,
                event_id,
                LINE_LLM,
                outcome,
                tenant,
                session,
                unit,
                attempt,
                node,
                total * 1000,
                tokens_in,
                tokens_out,
                total,
                None,
                provider or None,
                model or None,
                tier or None,
                price,
                amount,
                amount,
                operator,
                amount - operator,
                version,
            )
        )
        self._lines(unit).add((attempt, LINE_LLM, outcome))

    def _settle_pending(self, posted_seq: int, unit: str, attempt: int, outcome: str) -> None:
        attempts = self._pending.get(unit)
        pending = attempts.get(attempt) if attempts else None
        if pending is not None and not any(a == attempt and t == LINE_LLM for a, t, _ in self._lines(unit)):
            self._post_llm(posted_seq, pending, unit, attempt, outcome)
        self._drop_pending(unit, attempt)

    def _drop_pending(self, unit: str, attempt: int | None) -> None:
        attempts = self._pending.get(unit)
        if not attempts:
            return
        for dropped in list(attempts) if attempt is None else [attempt]:
            if attempts.pop(dropped, None) is not None:
                self._dirty_pending.add((unit, dropped))
        if not attempts:
            del self._pending[unit]

    # -- state access ------------------------------------------------------------------

    def _lines(self, unit: str) -> set[tuple[int, str, str]]:
        lines = self._unit_lines.get(unit)
        if lines is None:
            lines = self._unit_lines[unit] = set()
        return lines

    def _prefetch_units(self, conn: sqlite3.Connection, items: Sequence[Item]) -> None:
        """Load the existing lines of every unit this batch bills, in a few IN (...) queries."""
        units = sorted({it[6] for it in items if it[6] and it[2] in _UNIT_TYPES})
        for start in range(0, len(units), _IN_CHUNK):
            chunk = units[start : start + _IN_CHUNK]
            sql = (
                "SELECT work_unit_id, attempt, line_type, outcome FROM billing_ledger "
                f"WHERE work_unit_id IN ({','.join('?' * len(chunk))})"
            )
            for unit, attempt, line_type, outcome in conn.execute(sql, chunk):
                self._lines(unit).add((attempt, line_type, outcome))

    def _wallet_delta(self, tenant: str) -> list[int]:
        delta = self._wallet_deltas.get(tenant)
        if delta is None:
            delta = self._wallet_deltas[tenant] = [0, 0]
        return delta

    def _credit_exists(self, key: tuple[str, str]) -> bool:
        sql = "SELECT 1 FROM billing_credits WHERE tenant_id = ? AND client_key = ?"
        return self._db.execute(sql, key).fetchone() is not None

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("billing projection used outside apply()")
        return self._conn

    # -- writing -----------------------------------------------------------------------

    def _flush(self, conn: sqlite3.Connection) -> None:
        conn.executemany(LEDGER_INSERT, self._rows)
        if self._rows:
            # Wallet debits, account postings and session rollups are sums of this batch's lines:
            # let SQLite add them up in one pass over the new id range.
            span = (self._rows[0][0], self._rows[-1][0])
            for statement in ROLLUP_STATEMENTS:
                conn.execute(statement, span)
        conn.executemany(WALLET_DELTA_UPSERT, [(t, c, r) for t, (c, r) in self._wallet_deltas.items()])
        conn.executemany(
            "INSERT INTO billing_credits (tenant_id, client_key, seq, event_id, amount_micros) VALUES (?, ?, ?, ?, ?)",
            [(*key, *value) for key, value in self._new_credits.items()],
        )
        conn.executemany(
            "INSERT OR REPLACE INTO billing_pricing (version, seq, payload) VALUES (?, ?, ?)", self._new_pricings
        )
        self._flush_pending(conn)
        conn.executemany(
            "INSERT OR REPLACE INTO billing_errors (seq, event_id, type, error) VALUES (?, ?, ?, ?)", self._errors
        )
        self._conn = None

    def _flush_pending(self, conn: sqlite3.Connection) -> None:
        upserts, deletes = [], []
        for unit, attempt in self._dirty_pending:
            pending = self._pending.get(unit, {}).get(attempt)
            if pending is None:
                deletes.append((unit, attempt))
            else:
                upserts.append((unit, attempt, *pending))
        conn.executemany("DELETE FROM billing_pending_llm WHERE work_unit_id = ? AND attempt = ?", deletes)
        conn.executemany(f"INSERT OR REPLACE INTO billing_pending_llm VALUES ({','.join('?' * 14)})", upserts)
