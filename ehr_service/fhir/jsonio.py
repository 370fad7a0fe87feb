"""FHIR JSON in and out, numbers as written (R4 §2.6.2, §2.24.0.1 decimal).

In FHIR a decimal's precision is significant: ``1.50`` is not ``1.5`` and
``0.0010`` is not ``0.001``. The fast JSON library turns such numbers into binary
floats, which drops trailing zeros and rounds 17th significant digits. So request
bodies and stored resources are read here with every non-integer number kept as
a :class:`Number` (a :class:`~decimal.Decimal` that remembers its text), and
written back with that text, byte for byte. Integers stay ``int``; one that does
not fit 64 bits, or ``-0``, is a :class:`Number` too.

Reading is the standard library's scanner (about 1.5x the fast parser's time,
well under a percent of an ingest); writing is orjson with a ``default`` for
:class:`Number`. Everything the service writes as JSON goes through :func:`dumps`.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

import orjson

_INT64 = (-(2**63), 2**64 - 1)
# A lone surrogate escape (\ud800 without its pair) is not Unicode: the fast parser
# refuses it, the standard one does not; such bodies are checked by the fast one.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


class Number(Decimal):
    """A JSON number as it was written (``Decimal`` arithmetic, original text)."""

    __slots__ = ("text",)
    text: str

    def __new__(cls, text: str) -> Number:
        self = Decimal.__new__(cls, text)
        self.text = text
        return self

    def __reduce__(self) -> tuple[type[Number], tuple[str]]:
        return (Number, (self.text,))

    def __repr__(self) -> str:
        return f"Number('{self.text}')"


def _integer(text: str) -> int | Number:
    value = int(text)
    if text.startswith("-0") or not _INT64[0] <= value <= _INT64[1]:
        return Number(text)
    return value


def _constant(text: str) -> Any:
    raise ValueError(f"{text} is not a JSON number")


_DECODER = json.JSONDecoder(parse_float=Number, parse_int=_integer, parse_constant=_constant)


def loads(raw: bytes | bytearray | memoryview | str) -> Any:
    """Parse JSON keeping numbers as written; errors are ``orjson.JSONDecodeError``."""
    data = bytes(raw) if isinstance(raw, bytearray | memoryview) else raw
    try:
        if isinstance(data, bytes):
            if _SURROGATE_ESCAPE.search(data):
                orjson.loads(data)  # refuses lone surrogates, as everywhere else
            text = data.decode("utf-8")
        else:
            text = data
        return _DECODER.decode(text)
    except orjson.JSONDecodeError:
        raise
    except json.JSONDecodeError as exc:
        raise orjson.JSONDecodeError(exc.msg, exc.doc, exc.pos) from None
    except UnicodeDecodeError as exc:
        raise orjson.JSONDecodeError(f"not UTF-8: {exc.reason}", "", exc.start) from None
    except (ValueError, RecursionError, ArithmeticError) as exc:  # decimal.InvalidOperation
        raise orjson.JSONDecodeError(str(exc) or "a number or nesting too large", "", 0) from None


def _default(value: Any) -> Any:
    if isinstance(value, Number):
        return orjson.Fragment(value.text)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise TypeError("a JSON number must be finite")
        return orjson.Fragment(str(value))
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps(value: Any, option: int = 0) -> bytes:
    """Serialise with orjson; numbers read by :func:`loads` keep their text."""
    return orjson.dumps(value, default=_default, option=option)
