"""Money arithmetic: Decimal in Python, integer micro-dollars at rest.

Every amount is quantized to 6 decimal places with ROUND_HALF_EVEN. Arithmetic
uses an explicit decimal context, never the thread's global one, so a caller
that changes `decimal.getcontext()` cannot change a fold's result.

At rest (SQLite) amounts are INTEGER micro-dollars: exactly the quantized
Decimal scaled by 10**6, so SQL `SUM` stays exact (SQLite sums TEXT as float).
Outside the process amounts are decimal strings with 6 places.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation

CONTEXT = Context(prec=34, rounding=ROUND_HALF_EVEN, Emax=999_999, Emin=-999_999)
MICRO = Decimal("0.000001")
ZERO = Decimal(0)
ONE = Decimal(1)
_MICROS_PER_UNIT = 1_000_000
# Top-ups above this are operator typos, not money (one billion dollars).
MAX_CREDIT_USD = Decimal(1_000_000_000)


def quantize(value: Decimal) -> Decimal:
    """`value` rounded half-even to 6 decimal places."""
    return value.quantize(MICRO, context=CONTEXT)


def parse_decimal(value: object, *, field: str) -> Decimal:
    """A finite Decimal from a decimal string or an int (never a float: floats are not money)."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"{field} must be a decimal string, got {type(value).__name__}")
    try:
        parsed = Decimal(value)
    except InvalidOperation:
        raise ValueError(f"{field} is not a decimal number: {value!r}") from None
    if not parsed.is_finite():
        raise ValueError(f"{field} must be finite, got {value!r}")
    return parsed


def to_micros(amount: Decimal) -> int:
    """Integer micro-dollars of an amount (quantized first)."""
    return int(quantize(amount).scaleb(6, context=CONTEXT))


def from_micros(micros: int) -> Decimal:
    """The quantized Decimal of an integer micro-dollar amount."""
    return Decimal(micros).scaleb(-6, context=CONTEXT).quantize(MICRO, context=CONTEXT)


def micros_str(micros: int) -> str:
    """Decimal string with exactly 6 places of an integer micro amount, e.g. 1500 -> '0.001500'."""
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), _MICROS_PER_UNIT)
    return f"{sign}{whole}.{frac:06d}"


def usd_str(amount: Decimal) -> str:
    """Decimal string with exactly 6 places."""
    return micros_str(to_micros(amount))


def split_micros(amount_micros: int, operator_share: Decimal) -> tuple[int, int]:
    """Split an amount between operator and protocol so the parts sum exactly to the whole.

    The operator part is rounded half-even to the micro; the protocol gets the
    remainder, so no micro-dollar is created or lost by rounding.
    """
    operator = int((Decimal(amount_micros) * operator_share).quantize(ONE, context=CONTEXT))
    return operator, amount_micros - operator


def div_half_even(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded half-even to an integer (denominator > 0).

    Integer twin of `quantize` for amounts held in micro-dollars: the fold's hot path.
    """
    quotient, remainder = divmod(numerator, denominator)
    twice = remainder * 2
    if twice > denominator or (twice == denominator and quotient & 1):
        quotient += 1
    return quotient


def parse_micros(value: object, *, field: str) -> int:
    """Integer millionths of a non-negative decimal string ('0.123000' -> 123000), half-even beyond 6 places."""
    if isinstance(value, str) and 0 <= value.find(".") == len(value) - 7:
        # The wire format (6 places): skip Decimal for the common case.
        digits = value.replace(".", "", 1)
        if digits.isdigit() and digits.isascii():
            return int(digits)
    micros = to_micros(parse_decimal(value, field=field))
    if micros < 0:
        raise ValueError(f"{field} must not be negative, got {value!r}")
    return micros
