"""``GET /fhir/AuditEvent``: the hash-chained events as R4 AuditEvent resources
(IHE BALP style), read-only, for audit readers.

The events are the ones the service records itself; nothing a client writes
becomes one (AuditEvent writes are 405). Each event is served as the JSON that
was hashed into the chain, byte for byte. The whole request is parsed before any
SQL: an unknown parameter or a bad value is a 400 whatever is stored.

Search parameters (R4 AuditEvent): ``_id``, ``patient``, ``date``, ``agent``
(the token subject), ``entity`` (``Type/id`` acted on), ``type``, ``subtype``,
``outcome``; ``_count`` and keyset paging (``_cursor``), newest first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import orjson

from ehr_service.audit.events import OPERATOR_COMMANDS
from ehr_service.fhir.errors import Category, FhirError
from ehr_service.fhir.primitives import date_range, format_instant, new_id, utc_now
from ehr_service.fhir.references import parse_reference
from ehr_service.fhir.search.query import split_prefix
from ehr_service.storage.audit import EventQuery, KindFilter, StoredEvent

_TICK = timedelta(microseconds=1)  # date_range's high end is inclusive
SUBJECT_SYSTEM = "urn:ehr-service:token-subject"
EXCHANGE_IMPORT = ("exchange-receive", "exchange-pull")
EXCHANGE_EXPORT = ("exchange-feed", "exchange-push")
_SPECIAL = ("login", *EXCHANGE_IMPORT, *EXCHANGE_EXPORT, *(f"cli-{c}" for c in OPERATOR_COMMANDS))
# AuditEvent.type codes -> which kinds of event carry them (audit.events)
TYPES: dict[str, KindFilter] = {
    "rest": KindFilter(_SPECIAL, negate=True),
    "110114": KindFilter(("login",)),
    "110107": KindFilter(EXCHANGE_IMPORT),
    "110106": KindFilter(EXCHANGE_EXPORT),
    "110100": KindFilter(tuple(f"cli-{c}" for c in OPERATOR_COMMANDS)),
}
CONTROL = {"_count", "_cursor", "_format", "_pretty", "_total"}
PARAMETERS = ("_id", "patient", "date", "agent", "entity", "type", "subtype", "outcome")


@dataclass(frozen=True, slots=True)
class AuditSearch:
    query: EventQuery
    count: int
    before: int | None
    after: int | None


def _bad(name: str, message: str) -> FhirError:
    return FhirError.of(Category.INCORRECT, message, code="value", expression=[name])


def _values(name: str, raw: str) -> tuple[str, ...]:
    values = tuple(v for v in raw.split(",") if v)
    if not values:
        raise _bad(name, f"{name} needs a value")
    return values


def _code(value: str) -> str:
    """``system|code`` or ``code`` -> the code."""
    return value.rpartition("|")[2]


def _patient(value: str) -> str:
    parsed = parse_reference(value)
    if parsed is not None:
        if parsed.resource_type != "Patient":
            raise _bad("patient", f"patient refers to a Patient, not '{value[:60]}'")
        return parsed.resource_id
    return value


def _entity(value: str) -> str:
    parsed = parse_reference(value)
    if parsed is None:
        raise _bad("entity", f"entity takes Type/id, not '{value[:60]}'")
    return parsed.relative


def _subject(value: str) -> str:
    system, bar, code = value.rpartition("|")
    if bar and system not in {"", SUBJECT_SYSTEM}:
        raise _bad("agent", f"agent identifiers are of system {SUBJECT_SYSTEM}")
    return code


def _kinds(subtype: str) -> tuple[str, str]:
    """A subtype's event kinds: a REST interaction (``read``) or an operator's
    command (``institution-add``, recorded as ``cli-institution-add``)."""
    code = _code(subtype)
    return code, f"cli-{code}"


def _type(value: str) -> KindFilter:
    """A type this server never records matches nothing."""
    return TYPES.get(_code(value), KindFilter(()))


def _date(value: str) -> tuple[tuple[datetime | None, datetime | None], ...]:
    """The instants a ``date`` value with its prefix selects, as [low, high) ranges."""
    prefix, text = split_prefix(value)
    found = date_range(text)
    if found is None:
        raise _bad("date", f"'{value[:40]}' is not a valid date")
    low, high_inclusive = found
    try:
        high: datetime | None = high_inclusive + _TICK
    except OverflowError:  # the end of year 9999: no upper bound
        high = None
    by_prefix: dict[str, tuple[tuple[datetime | None, datetime | None], ...]] = {
        "eq": ((low, high),),
        "ap": ((low, high),),
        "ne": ((None, low), (high, None)) if high is not None else ((None, low),),
        "gt": ((high, None),) if high is not None else (),  # after the end of time: none
        "sa": ((high, None),) if high is not None else (),
        "ge": ((low, None),),
        "lt": ((None, low),),
        "eb": ((None, low),),
        "le": ((None, high),),
    }
    return by_prefix[prefix]


def _seq(value: str) -> int:
    """An id this server never gives out matches nothing."""
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 18 else -1


def parse(query: dict[str, list[str]], *, default_count: int, max_count: int) -> AuditSearch:
    """The whole search, checked before anything is read."""
    unknown = sorted(name for name in query if name not in PARAMETERS and name not in CONTROL)
    if unknown:
        raise FhirError.of(
            Category.INCORRECT,
            f"AuditEvent searches take {', '.join(PARAMETERS)}; not {', '.join(unknown)[:200]}",
            code="not-supported",
            expression=unknown[:5],
        )

    def each(name: str, convert: Callable[[str], Any]) -> tuple[tuple[Any, ...], ...]:
        return tuple(tuple(convert(v) for v in _values(name, raw)) for raw in query.get(name, []))

    recorded = tuple(
        tuple(r for v in _values("date", raw) for r in _date(v)) for raw in query.get("date", [])
    )
    event_query = EventQuery(
        ids=each("_id", _seq),
        patients=each("patient", _patient),
        subjects=each("agent", _subject),
        entities=each("entity", _entity),
        kinds=each("type", _type)
        + tuple(
            (KindFilter(tuple(k for v in _values("subtype", raw) for k in _kinds(v))),)
            for raw in query.get("subtype", [])
        ),
        outcomes=each("outcome", _code),
        recorded=recorded,
    )
    total = _last(query, "_total")
    if total is not None and total not in {"none", "estimate", "accurate"}:
        raise _bad("_total", "_total is none, estimate or accurate")
    count = _count(query, default_count, max_count)
    before = after = None
    cursor = _last(query, "_cursor")
    if cursor is not None:
        digits = cursor[1:]
        if (
            cursor[:1] not in {"a", "b"}
            or not (digits.isascii() and digits.isdigit())
            or len(digits) > 18
        ):
            raise _bad("_cursor", "_cursor is not a cursor this server issued")
        before, after = (int(cursor[1:]), None) if cursor[0] == "b" else (None, int(cursor[1:]))
    return AuditSearch(event_query, count, before, after)


def _last(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values else None


def _count(query: dict[str, list[str]], default: int, maximum: int) -> int:
    raw = _last(query, "_count")
    if raw is None:
        return default
    if not raw.strip().isdigit():
        raise _bad("_count", f"_count must be a non-negative integer, not '{raw[:20]}'")
    return min(int(raw), maximum)


def bundle(
    events: list[StoredEvent],
    search: AuditSearch,
    query: dict[str, list[str]],
    base_url: str,
    more: bool,
) -> dict[str, Any]:
    """The searchset: each event's hashed JSON as stored, with stable paging links."""
    kept = {k: v for k, v in query.items() if k != "_cursor"}
    url = f"{base_url}/AuditEvent"

    def link(relation: str, cursor: str | None) -> dict[str, str]:
        pairs = [(k, v) for k, values in kept.items() for v in values]
        if cursor is not None:
            pairs.append(("_cursor", cursor))
        encoded = urlencode(pairs)
        return {"relation": relation, "url": f"{url}?{encoded}" if encoded else url}

    links = [link("self", _last(query, "_cursor"))]
    if events and (more or search.after is not None):
        links.append(link("next", f"b{events[-1].seq}"))
    if events and (search.before is not None or (search.after is not None and more)):
        links.append(link("previous", f"a{events[0].seq}"))
    return {
        "resourceType": "Bundle",
        "id": new_id(),
        "meta": {"lastUpdated": format_instant(utc_now())},
        "type": "searchset",
        "link": links,
        "entry": [
            {
                "fullUrl": f"{url}/{e.seq}",
                "resource": orjson.Fragment(e.content),
                "search": {"mode": "match"},
            }
            for e in events
        ],
    }
