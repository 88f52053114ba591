"""Events that operators and krakod start-up append: wallet top-ups and pricing changes.

These are deciders, not folds: they validate input and build the `NewEvent` to
append. Appending, and reporting duplicates, is the caller's job.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from krakod.log import NewEvent
from krakod.projections.money import MAX_CREDIT_USD, ZERO, parse_decimal, quantize, usd_str
from krakod.projections.pricing import Pricing

MAX_ID_CHARS = 128
MAX_CLIENT_KEY_CHARS = 200


def _check_identifier(value: str, what: str, max_chars: int) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} is required")
    if len(value) > max_chars:
        raise ValueError(f"{what} is longer than {max_chars} characters")
    if value != value.strip() or any(c.isspace() or not c.isprintable() for c in value):
        raise ValueError(f"{what} must not contain spaces or control characters: {value!r}")


def credit_event(tenant_id: str, amount_usd: str | Decimal, client_key: str) -> NewEvent:
    """The `wallet.credited` event of a top-up; ValueError with a clear message on bad input.

    Idempotent by `credit:{tenant}:{client_key}`: appending it twice credits once (and the
    billing fold also ignores a second credit with the same tenant and client key).
    """
    _check_identifier(tenant_id, "tenant_id", MAX_ID_CHARS)
    _check_identifier(client_key, "client_key", MAX_CLIENT_KEY_CHARS)
    if isinstance(amount_usd, Decimal):
        amount = amount_usd
        if not amount.is_finite():
            raise ValueError(f"amount_usd must be finite, got {amount_usd}")
    else:
        amount = parse_decimal(str(amount_usd).strip(), field="amount_usd")
    if amount <= ZERO:
        raise ValueError(f"amount_usd must be greater than 0, got {amount_usd}")
    if quantize(amount) != amount:
        raise ValueError(f"amount_usd has more than 6 decimal places: {amount_usd}")
    if amount > MAX_CREDIT_USD:
        raise ValueError(f"amount_usd must be at most {MAX_CREDIT_USD}, got {amount_usd}")
    return NewEvent(
        type="wallet.credited",
        payload={"tenant_id": tenant_id, "amount_usd": usd_str(amount), "client_key": client_key},
        idempotency_key=f"credit:{tenant_id}:{client_key}",
        tenant_id=tenant_id,
        source="krakod:admin",
    )


def pricing_event_for(config: Pricing, latest: Pricing | None) -> NewEvent | None:
    """The `billing.pricing.updated` to append when `config` differs from the latest fact, else None.

    `latest` is the pricing of the newest such event in the log (None when there is none).
    The new version is latest + 1 and the key `pricing:{version}`, so two racing start-ups
    append one event.
    """
    if latest is not None and latest.same_terms(config):
        return None
    return pricing_event_at(config, 1 if latest is None else latest.version + 1)


def pricing_event_at(config: Pricing, version: int) -> NewEvent:
    """The `billing.pricing.updated` event making `config` the pricing `version`."""
    payload = replace(config, version=version).to_payload()
    return NewEvent(
        type="billing.pricing.updated",
        payload=payload,
        idempotency_key=f"pricing:{version}",
        source="krakod:config",
    )
