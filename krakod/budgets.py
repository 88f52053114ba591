"""LLM budgets: worst-case reservations before dispatch, settled or released exactly once.

The budget book is an in-memory fold of `wallet.credited` and `budget.*` events,
kept current as a *stager* of the log writer and rebuilt by replay at start, like
the unit table (krakod.units). Reservations are decisions, so they are events
appended with a guard: the writer evaluates each guard against the book at the
event's position in the log, and the book already holds every earlier staged
reservation. Any number of concurrent reservations therefore cannot overshoot a
tenant or session budget, without a lock.

Amounts are integer micro-dollars inside the book (exact arithmetic that no
decimal context can change) and 6-place decimal strings in payloads.

The lifecycle of one `llm_pod` unit:
- before it is scheduled: `reserve_events` (`budget.reserved`, key `reserve:{unit}`)
  with its `ReserveGuard`; a refusal becomes `exceeded_event` and a rejection;
- at completion: `settle_event` (`budget.settled`, key `settle:{unit}`);
- on final failure, cancellation or rejection: `release_event` (`budget.released`,
  key `release:{unit}`).
Settle and release go with the guard `BudgetBook.guard_open`, so at most one of
them is ever appended for a reservation; the fold also ignores a second one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

from krakod.log import Event, NewEvent
from krakod.projections.money import ZERO, div_half_even, micros_str, parse_micros, to_micros, usd_str

log = logging.getLogger(__name__)

DEFAULT_CREDIT_LIMIT_USD = Decimal("10.000000")
DEFAULT_LLM_USD_PER_1K_TOKENS = Decimal("0.002000")
DEFAULT_MAX_TOKENS = 256  # worst case assumed for a unit that does not bound its output
CHARS_PER_TOKEN = 4  # the usual rough ratio for English text; an estimate, not a tokenizer
SCOPES = ("unit", "session", "tenant")
REJECT_CODE = "BUDGET_EXCEEDED"  # the workunit.rejected code of a refused reservation
SOURCE = "krakod:budget"

OPEN, SETTLED, RELEASED = "open", "settled", "released"
_BUDGET_TYPES = frozenset({"wallet.credited", "budget.reserved", "budget.settled", "budget.released"})


def _env_llm_price() -> Decimal:
    raw = os.environ.get("KRAKO_LLM_USD_PER_1K_TOKENS", "").strip()
    if not raw:
        return DEFAULT_LLM_USD_PER_1K_TOKENS
    try:
        return Decimal(raw)
    except InvalidOperation:
        raise ValueError(f"KRAKO_LLM_USD_PER_1K_TOKENS is not a decimal number: {raw!r}") from None


def _check_money(value: Decimal, name: str) -> None:
    if not isinstance(value, Decimal) or not value.is_finite() or value < ZERO:
        raise ValueError(f"{name} must be a finite, non-negative Decimal, got {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetConfig:
    """Limits and the LLM price table. Configuration read once at start, never by the fold.

    Zero means unlimited for every session limit and for `unit_max_tokens`.
    """

    credit_limit_usd: Decimal = DEFAULT_CREDIT_LIMIT_USD  # spendable base of every tenant, before top-ups
    session_max_tokens: int = 0
    session_max_llm_invocations: int = 0
    session_max_cost_usd: Decimal = ZERO
    unit_max_tokens: int = 0  # cap on a unit's own max_tokens
    default_max_tokens: int = DEFAULT_MAX_TOKENS
    llm_usd_per_1k_tokens: Decimal = field(default_factory=_env_llm_price)
    llm_usd_per_1k_tokens_by_tier: Mapping[str, Decimal] = field(default_factory=dict)
    llm_usd_per_1k_tokens_by_model: Mapping[str, Decimal] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_money(self.credit_limit_usd, "credit_limit_usd")
        _check_money(self.session_max_cost_usd, "session_max_cost_usd")
        _check_money(self.llm_usd_per_1k_tokens, "llm_usd_per_1k_tokens")
        for name, table in (
            ("by_tier", self.llm_usd_per_1k_tokens_by_tier),
            ("by_model", self.llm_usd_per_1k_tokens_by_model),
        ):
            for key, price in table.items():
                _check_money(price, f"llm_usd_per_1k_tokens_{name}[{key!r}]")
        for name in ("session_max_tokens", "session_max_llm_invocations", "unit_max_tokens", "default_max_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> BudgetConfig:
        """Prices from the same variables billing reads (KRAKO_LLM_USD_PER_1K_TOKENS[_SMALL|...|_BY_MODEL])."""
        from krakod.projections.pricing import pricing_from_env

        pricing = pricing_from_env(environ)
        prices = {
            "llm_usd_per_1k_tokens": pricing.llm_usd_per_1k_tokens,
            "llm_usd_per_1k_tokens_by_tier": dict(pricing.llm_usd_per_1k_tokens_by_tier),
            "llm_usd_per_1k_tokens_by_model": dict(pricing.llm_usd_per_1k_tokens_by_model),
        }
        return cls(**{**prices, **overrides})

    def price_micros(self, tier: str, model: str) -> int:
        """Micro-dollars per 1,000 tokens: by model if listed, else by tier, else the base price."""
        price = self.llm_usd_per_1k_tokens_by_model.get(model)
        if price is None:
            price = self.llm_usd_per_1k_tokens_by_tier.get(tier, self.llm_usd_per_1k_tokens)
        return to_micros(price)

    def actual_cost(self, tokens_total: int, tier: str, model: str) -> Decimal:
        """Cost of `tokens_total` tokens, rounded half-even to the micro-dollar like the billing ledger."""
        return Decimal(micros_str(self._cost_micros(tokens_total, tier, model)))

    def _cost_micros(self, tokens: int, tier: str, model: str) -> int:
        return div_half_even(tokens * self.price_micros(tier, model), 1000)

    def estimate(self, unit_spec: Mapping[str, Any]) -> tuple[int, Decimal]:
        """Worst-case (tokens, amount_usd) of a unit: ceil(len(prompt + system) / 4) + max_tokens.

        `unit_spec` is shaped like the `workunit.submitted` payload. ValueError when
        max_tokens is not a non-negative integer.
        """
        tokens, _, micros = self._estimate(unit_spec)
        return tokens, Decimal(micros_str(micros))

    def _estimate(self, spec: Mapping[str, Any]) -> tuple[int, int, int]:
        """(tokens, max_tokens, amount in micros)."""
        raw_input, raw_llm = spec.get("input"), spec.get("llm")
        unit_input: Mapping[str, Any] = raw_input if isinstance(raw_input, dict) else {}
        llm: Mapping[str, Any] = raw_llm if isinstance(raw_llm, dict) else {}
        text = str(unit_input.get("prompt") or "") + str(unit_input.get("system") or "")
        max_tokens = _max_tokens(llm.get("max_tokens")) or _max_tokens(unit_input.get("max_tokens"))
        max_tokens = max_tokens or self.default_max_tokens
        tokens = -(-len(text) // CHARS_PER_TOKEN) + max_tokens
        tier = str(llm.get("tier") or unit_input.get("tier") or "")
        model = str(llm.get("model") or unit_input.get("model") or "")
        return tokens, max_tokens, self._cost_micros(tokens, tier, model)


def _max_tokens(value: object) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"max_tokens must be a non-negative integer, got {value!r}")
    return value


def needs_budget(unit_spec: Mapping[str, Any]) -> bool:
    """Only LLM work is budgeted: CPU units are billed but never reserved."""
    return unit_spec.get("kind") == "llm_pod"


class BudgetUnit(Protocol):
    """What the budget needs of a unit; krakod.units.Unit has it."""

    work_unit_id: str
    tenant_id: str
    session_id: str
    spec: dict[str, Any]
    attempt: int


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a reservation does not fit. limit, available and requested are strings in `measure` units."""

    scope: str  # "unit" | "session" | "tenant"
    measure: str  # "usd" | "tokens" | "invocations"
    limit: str
    available: str
    requested: str

    @property
    def reason(self) -> str:
        # Starts with the scope: `scope_of` reads it back from AppendResult.refused.
        return (
            f"{self.scope} budget exceeded: requested {self.requested} {self.measure}, "
            f"available {self.available} of {self.limit}"
        )


def scope_of(reason: str | None) -> str | None:
    """The scope ("unit", "session", "tenant") of a refusal reason from a `ReserveGuard`, else None."""
    if not reason:
        return None
    head = reason.split(" ", 1)[0]
    return head if head in SCOPES and reason.startswith(f"{head} budget exceeded") else None


@dataclass(slots=True)
class Reservation:
    work_unit_id: str
    tenant_id: str
    session_id: str
    attempt: int
    amount_micros: int
    tokens: int
    state: str = OPEN


@dataclass(slots=True)
class _Tenant:
    credited: int = 0
    settled: int = 0  # charged against the budget: never more than the reservation
    reserved: int = 0  # outstanding
    overrun: int = 0  # actual cost beyond reservations (billed by the ledger, not charged here)
    credit_keys: set[str] = field(default_factory=set)


@dataclass(slots=True)
class _Session:
    tokens_reserved: int = 0  # outstanding
    tokens_used: int = 0
    invocations: int = 0  # reserved or settled units; a release gives the slot back
    cost_reserved: int = 0
    cost_settled: int = 0


class ReserveGuard:
    """The guard of one `budget.reserved` event; remembers its refusal for `exceeded_event`."""

    __slots__ = ("amount_micros", "book", "refusal", "session_id", "static_refusal", "tenant_id", "tokens")

    def __init__(
        self, book: BudgetBook, unit: BudgetUnit, tokens: int, amount_micros: int, static_refusal: Refusal | None
    ) -> None:
        self.book = book
        self.tenant_id = unit.tenant_id
        self.session_id = unit.session_id
        self.tokens = tokens
        self.amount_micros = amount_micros
        self.static_refusal = static_refusal
        self.refusal: Refusal | None = None

    def __call__(self, new: NewEvent) -> str | None:
        # Called by the log writer at the event's position: the book holds every earlier reservation.
        self.refusal = self.static_refusal or self.book.check(
            self.tenant_id, self.session_id, self.tokens, self.amount_micros
        )
        return None if self.refusal is None else self.refusal.reason


class BudgetBook:
    """Tenant and session budgets folded from the log; decisions returned as events and guards."""

    def __init__(self, config: BudgetConfig | None = None) -> None:
        self.config = config or BudgetConfig()
        self._credit_limit = to_micros(self.config.credit_limit_usd)
        self._session_max_cost = to_micros(self.config.session_max_cost_usd)
        self._tenants: dict[str, _Tenant] = {}
        self._sessions: dict[tuple[str, str], _Session] = {}
        self._reservations: dict[str, Reservation] = {}

    # -- reading -----------------------------------------------------------------

    def estimate(self, unit_spec: Mapping[str, Any]) -> tuple[int, Decimal]:
        return self.config.estimate(unit_spec)

    def actual_cost(self, tokens_total: int, tier: str, model: str) -> Decimal:
        return self.config.actual_cost(tokens_total, tier, model)

    def reservation(self, work_unit_id: str) -> Reservation | None:
        return self._reservations.get(work_unit_id)

    def open_reservations(self, tenant_id: str | None = None) -> Iterator[Reservation]:
        """Outstanding reservations, e.g. to release those of units found terminal at start."""
        for r in self._reservations.values():
            if r.state == OPEN and (tenant_id is None or r.tenant_id == tenant_id):
                yield r

    def tenants(self) -> list[str]:
        return sorted(self._tenants)

    def spendable(self, tenant_id: str) -> Decimal:
        return Decimal(micros_str(self._spendable(tenant_id)))

    def _spendable(self, tenant_id: str) -> int:
        t = self._tenants.get(tenant_id)
        if t is None:
            return self._credit_limit
        # Negative only if the configured credit limit was lowered since money was spent.
        return max(0, self._credit_limit + t.credited - t.settled - t.reserved)

    def snapshot(self, tenant_id: str) -> dict[str, str]:
        """Decimal strings: credit_limit, credited, settled, reserved (outstanding), spendable, overrun."""
        t = self._tenants.get(tenant_id) or _Tenant()
        return {
            "tenant_id": tenant_id,
            "credit_limit": micros_str(self._credit_limit),
            "credited": micros_str(t.credited),
            "settled": micros_str(t.settled),
            "reserved": micros_str(t.reserved),
            "spendable": micros_str(self._spendable(tenant_id)),
            "overrun": micros_str(t.overrun),
        }

    def session_snapshot(self, tenant_id: str, session_id: str) -> dict[str, Any]:
        s = self._sessions.get((tenant_id, session_id)) or _Session()
        return {
            "tokens_reserved": s.tokens_reserved,
            "tokens_used": s.tokens_used,
            "invocations": s.invocations,
            "cost_reserved": micros_str(s.cost_reserved),
            "cost_settled": micros_str(s.cost_settled),
        }

    def check(self, tenant_id: str, session_id: str, tokens: int, amount_micros: int) -> Refusal | None:
        """Whether a new reservation fits the session limits and the tenant's spendable now."""
        c = self.config
        if session_id:  # "" is no session: limits would otherwise pool unrelated units
            s = self._sessions.get((tenant_id, session_id)) or _Session()
            used_tokens = s.tokens_reserved + s.tokens_used
            if c.session_max_tokens and used_tokens + tokens > c.session_max_tokens:
                available = str(c.session_max_tokens - used_tokens)
                return Refusal("session", "tokens", str(c.session_max_tokens), available, str(tokens))
            if c.session_max_llm_invocations and s.invocations >= c.session_max_llm_invocations:
                available = str(c.session_max_llm_invocations - s.invocations)
                return Refusal("session", "invocations", str(c.session_max_llm_invocations), available, "1")
            max_cost = self._session_max_cost
            spent = s.cost_reserved + s.cost_settled
            if max_cost and spent + amount_micros > max_cost:
                available = micros_str(max_cost - spent)
                return Refusal("session", "usd", micros_str(max_cost), available, micros_str(amount_micros))
        spendable = self._spendable(tenant_id)
        if amount_micros > spendable:
            t = self._tenants.get(tenant_id)
            total = self._credit_limit + (0 if t is None else t.credited)
            return Refusal("tenant", "usd", micros_str(total), micros_str(spendable), micros_str(amount_micros))
        return None

    # -- decisions ---------------------------------------------------------------

    def reserve_events(self, unit: BudgetUnit) -> tuple[list[NewEvent], list[ReserveGuard]]:
        """The `budget.reserved` event of a unit's worst case and its guard; ([], []) when none is due.

        Nothing is due for a unit that is not `llm_pod` or that already holds (or held) a
        reservation: one reservation covers every attempt of a unit. Append the pair with
        `log.append_many(events, guards=guards)`; a refused result carries the reason and
        the guard's `refusal` feeds `exceeded_event`.
        """
        if not needs_budget(unit.spec) or unit.work_unit_id in self._reservations:
            return [], []
        static_refusal = None
        try:
            tokens, max_tokens, amount = self.config._estimate(unit.spec)
        except ValueError as exc:
            # A malformed max_tokens cannot be budgeted: refuse it as the unit's own fault.
            tokens = amount = 0
            static_refusal = Refusal("unit", "tokens", str(self.config.unit_max_tokens), "0", f"invalid ({exc})")
        else:
            cap = self.config.unit_max_tokens
            if cap and max_tokens > cap:
                static_refusal = Refusal("unit", "tokens", str(cap), str(cap), str(max_tokens))
        event = NewEvent(
            type="budget.reserved",
            payload={
                "attempt": unit.attempt,
                "amount_usd": micros_str(amount),
                "tokens": tokens,
                "session_id": unit.session_id,
            },
            idempotency_key=f"reserve:{unit.work_unit_id}",
            tenant_id=unit.tenant_id,
            execution_session_id=unit.session_id,
            work_unit_id=unit.work_unit_id,
            source=SOURCE,
        )
        return [event], [ReserveGuard(self, unit, tokens, amount, static_refusal)]

    def settle_event(self, unit: BudgetUnit, actual_cost_usd: Decimal, tokens: int) -> NewEvent | None:
        """`budget.settled` of a unit's open reservation to its actual cost; None when it has none open.

        Append with `guard=book.guard_open`: a settle racing a release appends only the first.
        """
        r = self._reservations.get(unit.work_unit_id)
        if r is None or r.state != OPEN:
            return None
        _check_money(actual_cost_usd, "actual_cost_usd")
        return self._closing_event(
            unit,
            "budget.settled",
            "settle",
            {
                "amount_usd": usd_str(actual_cost_usd),
                "reserved_usd": micros_str(r.amount_micros),
                "tokens": int(tokens),
            },
        )

    def release_event(self, unit: BudgetUnit, reason: str) -> NewEvent | None:
        """`budget.released` of a unit's open reservation (failure, cancel, rejection); None when none is open.

        Append with `guard=book.guard_open`.
        """
        r = self._reservations.get(unit.work_unit_id)
        if r is None or r.state != OPEN:
            return None
        return self._closing_event(
            unit, "budget.released", "release", {"amount_usd": micros_str(r.amount_micros), "reason": reason}
        )

    def _closing_event(self, unit: BudgetUnit, type_: str, prefix: str, payload: dict[str, Any]) -> NewEvent:
        return NewEvent(
            type=type_,
            payload={"attempt": unit.attempt, **payload},
            idempotency_key=f"{prefix}:{unit.work_unit_id}",
            tenant_id=unit.tenant_id,
            execution_session_id=unit.session_id,
            work_unit_id=unit.work_unit_id,
            source=SOURCE,
        )

    def guard_open(self, new: NewEvent) -> str | None:
        """Guard: the unit's reservation is still open (for settle, release, and a schedule that needs it)."""
        r = self._reservations.get(new.work_unit_id or "")
        if r is None:
            return "no budget reservation for this unit"
        if r.state != OPEN:
            return f"budget reservation already {r.state}"
        return None

    # -- the fold ----------------------------------------------------------------

    def apply(self, event: Event) -> None:
        """Fold one event (stager and replay). Malformed budget events are logged and skipped:
        a stager that raises would close the log for everyone."""
        if event.type not in _BUDGET_TYPES:
            return
        try:
            payload = event.payload
            if event.type == "wallet.credited":
                self._credited(event, payload)
            elif event.work_unit_id:
                if event.type == "budget.reserved":
                    self._reserved(event, payload)
                elif event.type == "budget.settled":
                    self._settled(event.work_unit_id, payload)
                else:
                    self._released(event.work_unit_id)
        except (ValueError, TypeError, KeyError) as exc:
            log.error("budget book skipped malformed %s at seq %d: %s", event.type, event.seq, exc)

    def _tenant(self, tenant_id: str) -> _Tenant:
        t = self._tenants.get(tenant_id)
        if t is None:
            t = self._tenants[tenant_id] = _Tenant()
        return t

    def _session(self, tenant_id: str, session_id: str) -> _Session:
        s = self._sessions.get((tenant_id, session_id))
        if s is None:
            s = self._sessions[(tenant_id, session_id)] = _Session()
        return s

    def _credited(self, event: Event, payload: dict[str, Any]) -> None:
        tenant_id = str(payload.get("tenant_id") or event.tenant_id)
        amount = parse_micros(payload.get("amount_usd"), field="amount_usd")
        key = str(payload.get("client_key") or event.idempotency_key)
        t = self._tenant(tenant_id)
        if key not in t.credit_keys:  # the same top-up twice credits once, as in billing
            t.credit_keys.add(key)
            t.credited += amount

    def _reserved(self, event: Event, payload: dict[str, Any]) -> None:
        unit_id = event.work_unit_id or ""
        if unit_id in self._reservations:
            return
        amount = parse_micros(payload["amount_usd"], field="amount_usd")
        tokens = int(payload.get("tokens", 0))
        session_id = str(payload.get("session_id") or event.execution_session_id)
        r = Reservation(unit_id, event.tenant_id, session_id, int(payload.get("attempt", 1)), amount, tokens)
        self._reservations[unit_id] = r
        self._tenant(r.tenant_id).reserved += amount
        s = self._session(r.tenant_id, session_id)
        s.tokens_reserved += tokens
        s.cost_reserved += amount
        s.invocations += 1

    def _close(self, work_unit_id: str, state: str) -> tuple[Reservation, _Tenant, _Session] | None:
        r = self._reservations.get(work_unit_id)
        if r is None or r.state != OPEN:
            return None  # no reservation, or already settled/released: never counted twice
        r.state = state
        t = self._tenant(r.tenant_id)
        s = self._session(r.tenant_id, r.session_id)
        t.reserved -= r.amount_micros
        s.tokens_reserved -= r.tokens
        s.cost_reserved -= r.amount_micros
        return r, t, s

    def _settled(self, work_unit_id: str, payload: dict[str, Any]) -> None:
        actual = parse_micros(payload.get("amount_usd"), field="amount_usd")
        tokens = int(payload.get("tokens", 0))
        closed = self._close(work_unit_id, SETTLED)
        if closed is None:
            return
        r, t, s = closed
        # The reservation was the promise: charging more than it would let concurrent
        # admissions overshoot, so the excess is only recorded (the ledger bills it).
        charge = min(actual, r.amount_micros)
        t.settled += charge
        t.overrun += actual - charge
        s.cost_settled += charge
        s.tokens_used += min(max(tokens, 0), r.tokens)

    def _released(self, work_unit_id: str) -> None:
        closed = self._close(work_unit_id, RELEASED)
        if closed is not None:
            closed[2].invocations -= 1


def exceeded_event(unit: BudgetUnit, refusal: Refusal) -> NewEvent:
    """`budget.exceeded` (key `exceeded:{unit}`) for a refused reservation; reject the unit with REJECT_CODE."""
    return NewEvent(
        type="budget.exceeded",
        payload={
            "scope": refusal.scope,
            "measure": refusal.measure,
            "limit": refusal.limit,
            "available": refusal.available,
            "requested": refusal.requested,
            "attempt": unit.attempt,
        },
        idempotency_key=f"exceeded:{unit.work_unit_id}",
        tenant_id=unit.tenant_id,
        execution_session_id=unit.session_id,
        work_unit_id=unit.work_unit_id,
        source=SOURCE,
    )


__all__ = [
    "REJECT_CODE",
    "SCOPES",
    "BudgetBook",
    "BudgetConfig",
    "BudgetUnit",
    "Refusal",
    "Reservation",
    "ReserveGuard",
    "exceeded_event",
    "needs_budget",
    "scope_of",
]
