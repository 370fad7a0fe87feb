"""Exact numbers in the search index (R4 §3.1.1.5.1: a decimal's precision is
significant, and ``eq`` of a value must find that value).

PostgreSQL keeps ``numeric``. SQLite has no exact decimal type, so it keeps an
order-preserving text key: sign class (``A`` negative, ``B`` zero, ``C``
positive), the adjusted exponent biased to four digits, then the significant
digits; negatives take the nines' complement and a closing ``~`` so that text
order is number order (-1.23 < -1.2 < 0 < 1.2 < 1.23 < 10). Letters first keep
SQLite from reading a key as a number. Trailing zeros are not part of the key:
1.50 and 1.5 are the same number (the implicit range of a search value is worked
out from the digits it was written with, before the comparison).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import Dialect, Numeric, String
from sqlalchemy.types import TypeDecorator, TypeEngine

from ehr_service.fhir.json_types import DECIMAL_EXPONENT_LIMIT

BIAS = DECIMAL_EXPONENT_LIMIT + 1  # adjusted exponents from -5000 to 4999


def in_range(value: Decimal) -> bool:
    """Whether the index can hold the number: its first digit's place within
    ±5000 (stored values are validated tighter, search bounds may go one digit
    further)."""
    return value.is_finite() and (value == 0 or -BIAS <= value.adjusted() < BIAS)


def as_decimal(value: Any) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))
    raise TypeError(f"not a number: {type(value).__name__}")


def encode(value: Decimal) -> str:
    if not in_range(value):
        raise ValueError("the number is out of the range the index holds")
    if value == 0:
        return "B"
    sign, digits, _ = value.as_tuple()
    significant = "".join(map(str, digits)).rstrip("0")
    exponent = value.adjusted() + BIAS
    if sign == 0:
        return f"C{exponent:04d}{significant}"
    complement = "".join(str(9 - int(d)) for d in significant)
    return f"A{9999 - exponent:04d}{complement}~"


def decode(key: str) -> Decimal:
    if key == "B":
        return Decimal(0)
    negative = key[0] == "A"
    exponent = int(key[1:5])
    digits = key[5:].rstrip("~")
    if negative:
        exponent = 9999 - exponent
        digits = "".join(str(9 - int(d)) for d in digits)
    adjusted = exponent - BIAS
    sign = "-" if negative else ""  # exact: unary minus would round to 28 digits
    return Decimal(f"{sign}0.{digits}E{adjusted + 1}")


class ExactNumber(TypeDecorator[Decimal]):
    """``numeric`` on PostgreSQL, the order-preserving key on SQLite."""

    impl = Numeric(asdecimal=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String())
        return dialect.type_descriptor(Numeric(asdecimal=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        number = as_decimal(value)
        return encode(number) if dialect.name == "sqlite" else number

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return decode(str(value))
        return as_decimal(value)
