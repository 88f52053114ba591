"""Prices and billing policy as a fact of the log (`billing.pricing.updated`).

The billing fold never reads the environment: it uses the `Pricing` decoded
from the latest `billing.pricing.updated` event before the event it bills.
`pricing_from_env` is the other side, used once at krakod start to decide
whether the configuration changed (see `commands.pricing_event_for`).

LLM billing source (never twice, see billing.py):
- `bill_llm_from_invocation` true: tokens are billed from `llm.invocation.completed`;
- `bill_llm_from_workunit_completed` true: tokens are billed from the `llm` block of
  `workunit.completed`, unless the invocation already billed that attempt;
- both false is treated as invocation billing: LLM work is never free by accident.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from krakod.projections.money import ONE, ZERO, parse_decimal, quantize

STABILITY_CLASSES = ("community", "datacenter")
LLM_TIERS = ("small", "medium", "large")
DEFAULT_CPU_USD_PER_SEC = Decimal("0.000500")
DEFAULT_LLM_USD_PER_1K_TOKENS = Decimal("0.002000")
DEFAULT_OPERATOR_SHARE = Decimal("0.90")


def _price(value: object, field_name: str) -> Decimal:
    price = parse_decimal(value, field=field_name)
    if price < ZERO:
        raise ValueError(f"{field_name} must not be negative, got {value!r}")
    if quantize(price) != price:
        # Prices are money: 6 places, so every amount is an exact integer of micro-dollars.
        raise ValueError(f"{field_name} has more than 6 decimal places: {value!r}")
    return price


def _flag(value: object, field_name: str) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError(f"{field_name} must be a boolean, got {value!r}")


def _price_map(raw: object, field_name: str) -> dict[str, Decimal]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ValueError(f"{field_name} must be an object, got {type(raw).__name__}")
    return {str(k): _price(v, f"{field_name}.{k}") for k, v in sorted(raw.items())}


@dataclass(frozen=True, slots=True)
class Pricing:
    """Prices, LLM billing flags, failed-attempt policy, revenue split, overdraft limit."""

    version: int = 0
    cpu_usd_per_sec: Decimal = DEFAULT_CPU_USD_PER_SEC
    cpu_usd_per_sec_by_class: Mapping[str, Decimal] = field(default_factory=dict)
    llm_usd_per_1k_tokens: Decimal = DEFAULT_LLM_USD_PER_1K_TOKENS
    llm_usd_per_1k_tokens_by_tier: Mapping[str, Decimal] = field(default_factory=dict)
    llm_usd_per_1k_tokens_by_model: Mapping[str, Decimal] = field(default_factory=dict)
    min_charge_usd: Decimal = ZERO  # floor of each workunit_cpu line; 0 = no floor
    bill_llm_from_workunit_completed: bool = False
    bill_llm_from_invocation: bool = True
    bill_failed_attempts: bool = False
    operator_share: Decimal = DEFAULT_OPERATOR_SHARE
    overdraft_limit_usd: Decimal | None = None  # None: no limit; 0: balances must not go negative

    def __post_init__(self) -> None:
        if not ZERO <= self.operator_share <= ONE or quantize(self.operator_share) != self.operator_share:
            raise ValueError(f"split.operator must be within [0, 1] with at most 6 places, got {self.operator_share}")
        if self.min_charge_usd < ZERO:
            raise ValueError("min_charge_usd must not be negative")
        if self.overdraft_limit_usd is not None and self.overdraft_limit_usd < ZERO:
            raise ValueError("overdraft_limit_usd must not be negative")

    @property
    def protocol_share(self) -> Decimal:
        return ONE - self.operator_share

    @property
    def llm_from_invocation(self) -> bool:
        """Bill LLM tokens from invocation events (also the fallback when both flags are off)."""
        return self.bill_llm_from_invocation or not self.bill_llm_from_workunit_completed

    @property
    def llm_from_workunit_completed(self) -> bool:
        return self.bill_llm_from_workunit_completed

    def cpu_price(self, stability_class: str) -> Decimal:
        return self.cpu_usd_per_sec_by_class.get(stability_class, self.cpu_usd_per_sec)

    def llm_price(self, tier: str, model: str) -> Decimal:
        """Price per 1,000 tokens: by model if listed, else by tier, else the base price."""
        by_model = self.llm_usd_per_1k_tokens_by_model.get(model)
        if by_model is not None:
            return by_model
        return self.llm_usd_per_1k_tokens_by_tier.get(tier, self.llm_usd_per_1k_tokens)

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> Pricing:
        """Decode a `billing.pricing.updated` payload; ValueError when it is malformed."""
        version = payload.get("version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ValueError(f"version must be a positive integer, got {version!r}")
        split = payload.get("split") or {}
        if not isinstance(split, dict):
            raise ValueError("split must be an object")
        operator = parse_decimal(split.get("operator", str(DEFAULT_OPERATOR_SHARE)), field="split.operator")
        protocol = parse_decimal(split.get("protocol", str(ONE - operator)), field="split.protocol")
        if operator + protocol != ONE:
            raise ValueError(f"split.operator + split.protocol must be 1, got {operator} + {protocol}")
        overdraft = payload.get("overdraft_limit_usd")
        return cls(
            version=version,
            cpu_usd_per_sec=_price(payload.get("cpu_usd_per_sec", "0.000500"), "cpu_usd_per_sec"),
            cpu_usd_per_sec_by_class=_price_map(payload.get("cpu_usd_per_sec_by_class"), "cpu_usd_per_sec_by_class"),
            llm_usd_per_1k_tokens=_price(payload.get("llm_usd_per_1k_tokens", "0.002000"), "llm_usd_per_1k_tokens"),
            llm_usd_per_1k_tokens_by_tier=_price_map(
                payload.get("llm_usd_per_1k_tokens_by_tier"), "llm_usd_per_1k_tokens_by_tier"
            ),
            llm_usd_per_1k_tokens_by_model=_price_map(
                payload.get("llm_usd_per_1k_tokens_by_model"), "llm_usd_per_1k_tokens_by_model"
            ),
            min_charge_usd=_price(payload.get("min_charge_usd", "0"), "min_charge_usd"),
            bill_llm_from_workunit_completed=_flag(
                payload.get("bill_llm_from_workunit_completed", False), "bill_llm_from_workunit_completed"
            ),
            bill_llm_from_invocation=_flag(payload.get("bill_llm_from_invocation", True), "bill_llm_from_invocation"),
            bill_failed_attempts=_flag(payload.get("bill_failed_attempts", False), "bill_failed_attempts"),
            operator_share=operator,
            overdraft_limit_usd=None if overdraft is None else _price(overdraft, "overdraft_limit_usd"),
        )

    def to_payload(self) -> dict[str, Any]:
        """The `billing.pricing.updated` payload (prices as 6-place strings, canonical)."""

        def money(value: Decimal) -> str:
            return str(quantize(value))

        return {
            "version": self.version,
            "cpu_usd_per_sec": money(self.cpu_usd_per_sec),
            "cpu_usd_per_sec_by_class": {k: money(v) for k, v in sorted(self.cpu_usd_per_sec_by_class.items())},
            "llm_usd_per_1k_tokens": money(self.llm_usd_per_1k_tokens),
            "llm_usd_per_1k_tokens_by_tier": {
                k: money(v) for k, v in sorted(self.llm_usd_per_1k_tokens_by_tier.items())
            },
            "llm_usd_per_1k_tokens_by_model": {
                k: money(v) for k, v in sorted(self.llm_usd_per_1k_tokens_by_model.items())
            },
            "min_charge_usd": money(self.min_charge_usd),
            "bill_llm_from_workunit_completed": self.bill_llm_from_workunit_completed,
            "bill_llm_from_invocation": self.bill_llm_from_invocation,
            "bill_failed_attempts": self.bill_failed_attempts,
            "split": {"operator": money(self.operator_share), "protocol": money(self.protocol_share)},
            "overdraft_limit_usd": None if self.overdraft_limit_usd is None else money(self.overdraft_limit_usd),
        }

    def same_terms(self, other: Pricing) -> bool:
        """Equal in everything but the version."""
        return replace(self, version=0).to_payload() == replace(other, version=0).to_payload()


DEFAULT_PRICING = Pricing()  # in force before the first billing.pricing.updated event


def _env_flag(environ: Mapping[str, str], name: str, default: bool) -> bool:
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be 0 or 1, got {raw!r}")


def _env_price(environ: Mapping[str, str], name: str, default: Decimal) -> Decimal:
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    return _price(raw.strip(), name)


def pricing_from_env(environ: Mapping[str, str] | None = None) -> Pricing:
    """The configured pricing (version 0: not yet a fact). Read at krakod start, never by a fold.

    KRAKO_CPU_USD_PER_SEC (0.000500), KRAKO_CPU_USD_PER_SEC_COMMUNITY / _DATACENTER (base price),
    KRAKO_LLM_USD_PER_1K_TOKENS (0.002000), KRAKO_LLM_USD_PER_1K_TOKENS_SMALL / _MEDIUM / _LARGE,
    KRAKO_LLM_USD_PER_1K_TOKENS_BY_MODEL (JSON object model -> price), KRAKO_MIN_CHARGE_USD (0),
    KRAKO_BILL_LLM_FROM_WORKUNIT_COMPLETED (0), KRAKO_BILL_LLM_FROM_INVOCATION (1),
    KRAKO_BILL_FAILED_ATTEMPTS (0), KRAKO_SPLIT_OPERATOR (0.90; the protocol gets the rest),
    KRAKO_OVERDRAFT_LIMIT_USD (unset: no limit). Raises ValueError naming the bad variable.
    """
    env = os.environ if environ is None else environ
    cpu = _env_price(env, "KRAKO_CPU_USD_PER_SEC", DEFAULT_CPU_USD_PER_SEC)
    llm = _env_price(env, "KRAKO_LLM_USD_PER_1K_TOKENS", DEFAULT_LLM_USD_PER_1K_TOKENS)
    by_model_raw = env.get("KRAKO_LLM_USD_PER_1K_TOKENS_BY_MODEL", "").strip()
    try:
        by_model = _price_map(json.loads(by_model_raw), "KRAKO_LLM_USD_PER_1K_TOKENS_BY_MODEL") if by_model_raw else {}
    except json.JSONDecodeError as exc:
        raise ValueError(f"KRAKO_LLM_USD_PER_1K_TOKENS_BY_MODEL is not a JSON object: {exc}") from None
    operator = _env_price(env, "KRAKO_SPLIT_OPERATOR", DEFAULT_OPERATOR_SHARE)
    if operator > ONE:
        raise ValueError(f"KRAKO_SPLIT_OPERATOR must be within [0, 1], got {operator}")
    overdraft_raw = env.get("KRAKO_OVERDRAFT_LIMIT_USD", "").strip()
    return Pricing(
        cpu_usd_per_sec=cpu,
        cpu_usd_per_sec_by_class={
            c: _env_price(env, f"KRAKO_CPU_USD_PER_SEC_{c.upper()}", cpu) for c in STABILITY_CLASSES
        },
        llm_usd_per_1k_tokens=llm,
        llm_usd_per_1k_tokens_by_tier={
            t: _env_price(env, f"KRAKO_LLM_USD_PER_1K_TOKENS_{t.upper()}", llm) for t in LLM_TIERS
        },
        llm_usd_per_1k_tokens_by_model=by_model,
        min_charge_usd=_env_price(env, "KRAKO_MIN_CHARGE_USD", ZERO),
        bill_llm_from_workunit_completed=_env_flag(env, "KRAKO_BILL_LLM_FROM_WORKUNIT_COMPLETED", False),
        bill_llm_from_invocation=_env_flag(env, "KRAKO_BILL_LLM_FROM_INVOCATION", True),
        bill_failed_attempts=_env_flag(env, "KRAKO_BILL_FAILED_ATTEMPTS", False),
        operator_share=operator,
        overdraft_limit_usd=_price(overdraft_raw, "KRAKO_OVERDRAFT_LIMIT_USD") if overdraft_raw else None,
    )
