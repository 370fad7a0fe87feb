"""Paging parameters shared by history (and, later, search): ``_count`` and cursors.

Pages are keyset-paged on a monotonically increasing sequence so that links
stay correct while data is written: a cursor ``b<n>`` asks for entries older
than ``n``, ``a<n>`` for entries newer than ``n``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode

from ehr_service.config import Settings
from ehr_service.fhir.errors import Category, FhirError

_CURSOR = re.compile(r"(?P<direction>[ab])(?P<seq>\d{1,19})")
CURSOR_PARAM = "_cursor"


def first_value(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values else None


def page_size(query: dict[str, list[str]], settings: Settings) -> int:
    """``_count`` clamped to the configured maximum; a non-number is a 400."""
    raw = first_value(query, "_count")
    if raw is None:
        return settings.default_page_size
    if not raw.strip().isdigit():
        raise FhirError.of(
            Category.INCORRECT,
            f"_count must be a non-negative integer, not '{raw[:20]}'",
            code="value",
            expression=["_count"],
        )
    return min(int(raw), settings.max_page_size)


@dataclass(frozen=True, slots=True)
class Cursor:
    before: int | None = None
    after: int | None = None

    @property
    def is_first_page(self) -> bool:
        return self.before is None and self.after is None


def parse_cursor(query: dict[str, list[str]]) -> Cursor:
    raw = first_value(query, CURSOR_PARAM)
    if raw is None:
        return Cursor()
    match = _CURSOR.fullmatch(raw)
    if match is None:
        raise FhirError.of(
            Category.INCORRECT,
            f"{CURSOR_PARAM} is not a cursor this server issued",
            code="value",
            expression=[CURSOR_PARAM],
        )
    seq = int(match["seq"])
    return Cursor(before=seq) if match["direction"] == "b" else Cursor(after=seq)


def page_url(base: str, params: Mapping[str, str | None]) -> str:
    query = urlencode({k: v for k, v in params.items() if v is not None})
    return f"{base}?{query}" if query else base
