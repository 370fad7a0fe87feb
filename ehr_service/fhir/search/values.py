"""Index values of a resource, per search parameter type (R4 §3.1.1.5).

What each parameter's expression selects is turned into rows of plain tuples,
ready for the index tables: strings normalised for case- and accent-insensitive
matching, tokens as (system, code, text), dates as the instant range they cover,
references as target type/id or URL (and the Reference.identifier), quantities
and numbers exactly (``Decimal``) with their system and code.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any

from ehr_service.fhir.primitives import date_range
from ehr_service.fhir.references import parse_reference
from ehr_service.fhir.search.registry import SearchParameter, SearchParameterRegistry

_CACHED_LENGTH = 256  # normalised forms of short strings are cached
DATE_MIN = datetime(1, 1, 1, tzinfo=UTC)
DATE_MAX = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
_NAME_PARTS = ("family", "given", "prefix", "suffix", "text")
_CONTACT_SYSTEMS = {"phone", "fax", "email", "pager", "url", "sms", "other"}
_ADDRESS_PARTS = ("line", "city", "district", "state", "postalCode", "country", "text")


def normalise(text: str) -> str:
    """Case- and accent-insensitive form for string search (R4 §3.1.1.5.13), whole:
    a value of any length is searchable exactly."""
    return _normalise_short(text) if len(text) <= _CACHED_LENGTH else _normalised(text)


@lru_cache(maxsize=65536)
def _normalise_short(text: str) -> str:
    return _normalised(text)


def _normalised(text: str) -> str:
    if text.isascii():
        return " ".join(text.lower().split())
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(stripped.casefold().split())


@dataclass(slots=True)
class IndexRows:
    """All index rows of one resource; each row starts with the parameter code."""

    strings: list[tuple[str, str, str]] = field(default_factory=list)
    tokens: list[tuple[str, str | None, str | None, str | None]] = field(default_factory=list)
    dates: list[tuple[str, datetime, datetime]] = field(default_factory=list)
    references: list[tuple[str, str | None, str | None, str | None, str | None, str | None]] = (
        field(default_factory=list)
    )
    quantities: list[tuple[str, Decimal, str | None, str | None]] = field(default_factory=list)
    numbers: list[tuple[str, Decimal]] = field(default_factory=list)
    uris: list[tuple[str, str]] = field(default_factory=list)
    composites: list[
        tuple[
            str,
            str | None,
            str | None,
            str | None,
            str | None,
            Decimal | None,
            datetime | None,
            datetime | None,
        ]
    ] = field(default_factory=list)


def _strings(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        parts = _NAME_PARTS if ("family" in node or "given" in node) else _ADDRESS_PARTS
        out: list[str] = []
        for key in parts:
            value = node.get(key)
            if isinstance(value, str):
                out.append(value)
            elif isinstance(value, list):
                out.extend(v for v in value if isinstance(v, str))
        if not out and isinstance(node.get("text"), str):
            out.append(node["text"])
        return out
    return []


def _identifier_type_text(kind: Any) -> str | None:
    """Identifier.type.text, else its first coding's display."""
    if not isinstance(kind, dict):
        return None
    if isinstance(kind.get("text"), str):
        return str(kind["text"])
    for coding in kind.get("coding") or ():
        if isinstance(coding, dict) and isinstance(coding.get("display"), str):
            return str(coding["display"])
    return None


def tokens_of(node: Any) -> list[tuple[str | None, str | None, str | None]]:
    """(system, code, normalised text) of a Coding, CodeableConcept, Identifier,
    ContactPoint, code, boolean or string."""
    if isinstance(node, bool):
        return [(None, "true" if node else "false", None)]
    if isinstance(node, str):
        return [(None, node, None)]
    if not isinstance(node, dict):
        return []
    if "coding" in node or ("text" in node and "value" not in node and "code" not in node):
        # :text (R4 §3.1.1.4.9) matches CodeableConcept.text and every Coding.display:
        # each coding's row carries its display, and the concept's text a row of its
        # own unless a display already says it.
        concept_text = node.get("text") if isinstance(node.get("text"), str) else None
        out = []
        for coding in node.get("coding") or []:
            if isinstance(coding, dict):
                display = coding.get("display")
                shown = display if isinstance(display, str) else concept_text
                out.append(
                    (
                        coding.get("system"),
                        coding.get("code"),
                        normalise(shown) if isinstance(shown, str) else None,
                    )
                )
        if concept_text and normalise(concept_text) not in {text for _, _, text in out}:
            out.append((None, None, normalise(concept_text)))
        return out
    if "code" in node:  # Coding
        display = node.get("display")
        return [
            (
                node.get("system"),
                node.get("code"),
                normalise(display) if isinstance(display, str) else None,
            )
        ]
    if "value" in node and isinstance(node["value"], str):  # Identifier, ContactPoint
        system = node.get("system")
        if system in _CONTACT_SYSTEMS:  # ContactPoint: the token is its value alone
            system = None
        kind = _identifier_type_text(node.get("type"))  # what :text matches on an Identifier
        return [
            (
                system if isinstance(system, str) else None,
                node["value"],
                normalise(kind) if kind else None,
            )
        ]
    return []


def dates_of(node: Any) -> list[tuple[datetime, datetime]]:
    if isinstance(node, str):
        found = date_range(node)
        return [found] if found else []
    if isinstance(node, dict):
        if "start" in node or "end" in node:  # Period
            start = date_range(node["start"]) if isinstance(node.get("start"), str) else None
            end = date_range(node["end"]) if isinstance(node.get("end"), str) else None
            return [(start[0] if start else DATE_MIN, end[1] if end else DATE_MAX)]
        out = []
        for event in node.get("event") or []:  # Timing
            if isinstance(event, str) and (found := date_range(event)):
                out.append(found)
        bounds = (node.get("repeat") or {}).get("boundsPeriod")
        if isinstance(bounds, dict):
            out.extend(dates_of(bounds))
        return out
    return []


def exact(value: int | float | Decimal) -> Decimal:
    """A number as the index keeps it: exactly as written."""
    if isinstance(value, Decimal):
        return value
    return Decimal(value) if isinstance(value, int) else Decimal(repr(value))


def quantities_of(node: Any) -> list[tuple[Decimal, str | None, str | None]]:
    if not isinstance(node, dict):
        return []
    if "low" in node or "high" in node:  # Range: index both ends
        return quantities_of(node.get("low")) + quantities_of(node.get("high"))
    value = node.get("value")
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        code = node.get("code") or node.get("unit") or node.get("currency")
        return [(exact(value), node.get("system"), code)]
    return []


ReferenceValue = tuple[str | None, str | None, str | None, str | None, str | None]


def references_of(node: Any) -> list[ReferenceValue]:
    """(target type, target id, url, identifier system, identifier value)."""
    if isinstance(node, str):  # canonical or uri
        return [(None, None, node.split("|")[0], None, None)]
    if not isinstance(node, dict):
        return []
    out: list[ReferenceValue] = []
    reference = node.get("reference")
    if isinstance(reference, str) and not reference.startswith("#"):
        parsed = parse_reference(reference)
        if parsed is not None and parsed.base is None:
            out.append((parsed.resource_type, parsed.resource_id, None, None, None))
        else:
            out.append((parsed.resource_type if parsed else None, None, reference, None, None))
    identifier = node.get("identifier")
    if isinstance(identifier, dict) and isinstance(identifier.get("value"), str):
        out.append((None, None, None, identifier.get("system"), identifier["value"]))
    return out


def _add(rows: IndexRows, parameter: SearchParameter, kind: str, node: Any) -> None:
    code = parameter.code
    if kind == "string":
        for text in _strings(node):
            rows.strings.append((code, normalise(text), text))
    elif kind == "token":
        for token in tokens_of(node):
            rows.tokens.append((code, *token))
        if (
            isinstance(node, dict)
            and isinstance(node.get("type"), dict)
            and isinstance(node.get("value"), str)
        ):  # Identifier.type, for :of-type
            for type_system, type_code, _ in tokens_of(node["type"]):
                rows.tokens.append(
                    (f"{code}:of-type", f"{type_system}|{type_code}", node["value"], None)
                )
    elif kind == "date":
        for low, high in dates_of(node):
            rows.dates.append((code, low, high))
    elif kind == "reference":
        for target_type, target_id, url, id_system, id_value in references_of(node):
            rows.references.append((code, target_type, target_id, url, id_system, id_value))
    elif kind == "quantity":
        for quantity in quantities_of(node):
            rows.quantities.append((code, *quantity))
    elif kind == "number":
        if isinstance(node, int | float | Decimal) and not isinstance(node, bool):
            rows.numbers.append((code, exact(node)))
    elif kind == "uri" and isinstance(node, str):
        rows.uris.append((code, node))


def _add_composite(
    rows: IndexRows, parameter: SearchParameter, element: Any, resource: dict[str, Any]
) -> None:
    first, second = parameter.components
    for c1_system, c1_code, _ in [
        t for n in first.extract(element, resource) for t in tokens_of(n)
    ]:
        for node in second.extract(element, resource):
            if second.type == "quantity":
                for amount, system, unit in quantities_of(node):
                    rows.composites.append(
                        (parameter.code, c1_system, c1_code, system, unit, amount, None, None)
                    )
            elif second.type == "date":
                for low, high in dates_of(node):
                    rows.composites.append(
                        (parameter.code, c1_system, c1_code, None, None, None, low, high)
                    )
            elif second.type == "string":
                for text in _strings(node):
                    rows.composites.append(
                        (
                            parameter.code,
                            c1_system,
                            c1_code,
                            None,
                            normalise(text),
                            None,
                            None,
                            None,
                        )
                    )
            else:  # token or reference: compare as system|code
                for token_system, token_code, _ in tokens_of(node):
                    rows.composites.append(
                        (
                            parameter.code,
                            c1_system,
                            c1_code,
                            token_system,
                            token_code,
                            None,
                            None,
                            None,
                        )
                    )


def index_rows(registry: SearchParameterRegistry, resource: dict[str, Any]) -> IndexRows:
    """Every index row of a resource, from its type's search parameters."""
    rows = IndexRows()
    for parameter in registry.indexed(str(resource.get("resourceType"))):
        assert parameter.extract is not None
        for node in parameter.extract(resource):
            if parameter.type == "composite":
                _add_composite(rows, parameter, node, resource)
            else:
                _add(rows, parameter, parameter.type, node)
    # FHIRPath unions deduplicate (e.g. a given name repeated in two names): so do we.
    for name in IndexRows.__slots__:
        values = getattr(rows, name)
        if len(values) > 1:
            setattr(rows, name, list(dict.fromkeys(values)))
    return rows
