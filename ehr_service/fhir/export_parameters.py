"""The kick-off parameters of FHIR Bulk Data export (Bulk Data Access IG v2,
export.html, "Query Parameters"), read from the URL or from a ``Parameters`` body
(POST kick-off) into one form, and the parts of them that need no database.

A parameter the server does not offer is refused (400) unless the client sent
``Prefer: handling=lenient``; then it is ignored and reported in the manifest's
``error`` files (:class:`Unsupported`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from ehr_service.fhir.errors import Category, FhirError, Issue
from ehr_service.fhir.parameters import OperationInput
from ehr_service.fhir.resource_types import R4_RESOURCE_TYPES
from ehr_service.fhir.search.shaping import element_names, elements_kept

KICKOFF = frozenset(
    {
        "_outputFormat",
        "_since",
        "_type",
        "_typeFilter",
        "patient",
        "_elements",
        "includeAssociatedData",
    }
)
GENERAL = frozenset({"_format", "_pretty"})  # FHIR's general parameters: nothing to export
NDJSON_FORMATS = frozenset({"application/fhir+ndjson", "application/ndjson", "ndjson"})
SINGLE = ("_outputFormat", "_since")
MAX_TYPE_FILTERS = 100
# The value[x] a Parameters part of each kick-off parameter takes.
_BODY_VALUES: dict[str, tuple[str, ...]] = {
    "_outputFormat": ("String",),
    "_since": ("Instant", "DateTime"),
    "_type": ("String",),
    "_typeFilter": ("String",),
    "_elements": ("String",),
    "includeAssociatedData": ("Code", "String"),
    "patient": ("Reference",),
}
# One _typeFilter value may hold several queries joined by commas: a new query starts
# where a comma is followed by a resource type and "?".
_NEXT_QUERY = re.compile(r",(?=[A-Z][A-Za-z]{1,63}\?)")


def _bad(message: str, name: str, code: str = "invalid") -> FhirError:
    return FhirError.of(Category.INCORRECT, message, code=code, expression=[name])


@dataclass(frozen=True, slots=True)
class Prefer:
    respond_async: bool
    lenient: bool


def prefer_of(header: str | None) -> Prefer:
    """``Prefer: respond-async, handling=lenient`` (RFC 7240; repeated headers joined)."""
    items = [  # a preference's own parameters (";wait=10") are not looked at
        item.partition(";")[0].strip().lower().replace(" ", "")
        for item in (header or "").split(",")
    ]
    return Prefer("respond-async" in items, "handling=lenient" in items)


class Unsupported:
    """What the client asked for and the server does not offer: a 400, or under
    ``Prefer: handling=lenient`` an issue for the manifest's error file."""

    def __init__(self, lenient: bool) -> None:
        self.lenient = lenient
        self.issues: list[Issue] = []

    def refuse(self, message: str, name: str, code: str = "not-supported") -> None:
        if not self.lenient:
            raise _bad(message, name, code)
        self.issues.append(
            Issue(f"{message}; ignored (Prefer: handling=lenient)", code, "warning", (name,))
        )


# -- the POST body --------------------------------------------------------------------
def _part_value(part: dict[str, Any], name: str) -> str:
    kinds = _BODY_VALUES.get(name)
    if kinds is None:  # not a kick-off parameter: kept by name, to be refused or ignored
        values = [v for k, v in part.items() if k.startswith("value") and isinstance(v, str)]
        return values[0] if values else ""
    for kind in kinds:
        value = part.get(f"value{kind}")
        if kind == "Reference" and isinstance(value, dict):
            value = value.get("reference")
        if isinstance(value, str) and value.strip():
            return value
    wanted = " or ".join(f"value{k}" for k in kinds)
    raise _bad(f"$export: the parameter '{name}' must have a {wanted}", name)


def body_query(body: Any) -> dict[str, list[str]]:
    """A ``Parameters`` kick-off body as the URL's parameters would be."""
    parts = OperationInput(body, "$export").parts
    query: dict[str, list[str]] = {}
    for part in parts:
        name = part["name"]
        query.setdefault(name, []).append(_part_value(part, name))
    return query


def merged(url: dict[str, list[str]], body: dict[str, list[str]]) -> dict[str, list[str]]:
    """The URL's and the body's parameters; one given in both places is a 400."""
    both = sorted(set(url) & set(body) - GENERAL)
    if both:
        raise _bad(
            f"$export: '{both[0]}' is given both in the URL and in the Parameters body",
            both[0],
        )
    return {**url, **body}


# -- values ---------------------------------------------------------------------------
def listed(values: Iterable[str] | None) -> list[str]:
    """Comma-delimited values; a repeated parameter counts as more of them (IG v2)."""
    return [v.strip() for value in values or () for v in value.split(",") if v.strip()]


def single(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name) or []
    if len(values) > 1:
        raise _bad(f"$export: '{name}' may be given once", name)
    return values[0] if values else None


@dataclass(frozen=True, slots=True)
class TypeFilter:
    """``Type?query``: its text, as given, and its search parameters."""

    resource_type: str
    text: str
    query: dict[str, list[str]]


def type_filters(values: Sequence[str] | None) -> list[TypeFilter]:
    filters = []
    for value in values or ():
        for text in _NEXT_QUERY.split(value):
            text = text.strip()
            resource_type, mark, query = text.partition("?")
            if not mark or not resource_type:
                raise _bad(
                    f"_typeFilter: '{text[:100]}' is not of the form Type?query", "_typeFilter"
                )
            if resource_type not in R4_RESOURCE_TYPES:
                raise _bad(
                    f"_typeFilter: '{resource_type[:64]}' is not a resource type",
                    "_typeFilter",
                    "value",
                )
            parsed: dict[str, list[str]] = {}
            for key, item in parse_qsl(query, keep_blank_values=True):
                parsed.setdefault(key, []).append(item)
            filters.append(TypeFilter(resource_type, text, parsed))
    if len(filters) > MAX_TYPE_FILTERS:
        raise _bad(f"_typeFilter: at most {MAX_TYPE_FILTERS} queries", "_typeFilter", "too-costly")
    return filters


def element_plan(types: Sequence[str], values: Sequence[str] | None) -> dict[str, frozenset[str]]:
    """``_elements`` per exported type: the JSON names kept (those listed for it,
    choice names expanded, and the mandatory ones). ``Type.element`` applies to that
    type, a bare ``element`` to every exported type that has it; a type with no
    listed element is exported whole. Only root elements may be named (IG v2)."""
    names = listed(values)
    if not names:
        return {}
    bare: set[str] = set()
    qualified: dict[str, set[str]] = {}
    for name in names:
        head, dot, element = name.partition(".")
        if not dot:
            bare.add(name)
        elif "." in element or not element or head not in R4_RESOURCE_TYPES:
            raise _bad(
                f"_elements: '{name[:100]}' is not [type.]element of a root element",
                "_elements",
                "value",
            )
        elif head not in types:
            raise _bad(f"_elements: {head} is not exported by this request", "_elements", "value")
        else:
            qualified.setdefault(head, set()).add(element)
    plan: dict[str, frozenset[str]] = {}
    used: set[str] = set()
    for resource_type in types:
        known = element_names(resource_type)
        applicable = {n for n in bare if known is None or n in known}
        used |= applicable
        wanted = frozenset(applicable | qualified.get(resource_type, set()))
        if wanted:
            plan[resource_type] = elements_kept(resource_type, wanted)
    unused = sorted(bare - used)
    if unused:
        raise _bad(
            f"_elements: no exported type has the element {', '.join(unused)[:200]}",
            "_elements",
            "value",
        )
    return plan
