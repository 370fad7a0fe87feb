"""``/OperationDefinition``: the definitions of the operations this server routes,
read-only (R4 §3.1.0.2 read, §3.1.1 search), served as shipped.

The canonical of every operation in the CapabilityStatement resolves here. The
definitions are conformance data, not records: any valid token reads them (no scope
is needed), nothing is audited, and every write is a 405 (``READ_ONLY_TYPES``).

Search: ``_id`` and ``code`` (token), ``url`` (uri, with or without ``|version``)
and ``name`` (string: starts with, case-insensitive; ``:exact``); a comma is OR, a
repeated parameter AND. Any other parameter is a 400 naming these (the few
definitions are returned in one page).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from ehr_service.fhir.errors import Category, FhirError, Issue
from ehr_service.fhir.operations import OperationDefinition, load_operation_definitions
from ehr_service.fhir.primitives import format_instant, new_id, utc_now
from ehr_service.interactions.context import RequestContext
from ehr_service.interactions.results import Result

TYPE = "OperationDefinition"
_FORMAT = frozenset({"_format", "_pretty"})
Test = Callable[[OperationDefinition, str], bool]
SEARCH_PARAMETERS: dict[str, Test] = {
    "_id": lambda d, v: d.id == v,
    "code": lambda d, v: d.code == v,
    "url": lambda d, v: d.url == v.split("|", 1)[0],
    "name": lambda d, v: d.name.casefold().startswith(v.casefold()),
    "name:exact": lambda d, v: d.name == v,
}


def definitions(ctx: RequestContext) -> tuple[OperationDefinition, ...]:
    return load_operation_definitions(ctx.settings.profiles_dir).all


def read(ctx: RequestContext, definition_id: str) -> Result:
    found = load_operation_definitions(ctx.settings.profiles_dir).by_id.get(definition_id)
    if found is None:
        raise FhirError.of(
            Category.NOT_FOUND, f"{TYPE}/{definition_id[:64]} is not known", code="not-found"
        )
    return Result(200, found.content, TYPE, found.id)


def search(ctx: RequestContext) -> Result:
    tests: list[tuple[Test, list[str]]] = []
    unknown: list[str] = []
    for name, values in ctx.query.items():
        if name in _FORMAT:
            continue
        test = SEARCH_PARAMETERS.get(name)
        if test is None:
            unknown.append(name)
            continue
        for value in values:
            tests.append((test, [v for v in value.split(",") if v]))
    if unknown:  # like AuditEvent's: a handful of definitions, searched exactly
        raise FhirError(
            Category.INCORRECT,
            tuple(
                Issue(f"Unknown or unsupported search parameter '{n[:64]}' "
                      f"(supported: {', '.join(SEARCH_PARAMETERS)})", "not-supported")
                for n in unknown
            ),
        )  # fmt: skip
    found = [
        d
        for d in definitions(ctx)
        if all(any(test(d, v) for v in values) for test, values in tests)
    ]
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": f"{ctx.base_url}/{TYPE}/{d.id}",
            "resource": orjson.Fragment(d.content),
            "search": {"mode": "match"},
        }
        for d in found
    ]
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": new_id(),
        "meta": {"lastUpdated": format_instant(utc_now())},
        "type": "searchset",
        "total": len(found),
        "link": [{"relation": "self", "url": f"{ctx.base_url}/{TYPE}"}],
    }
    if entries:
        bundle["entry"] = entries
    return Result(200, bundle)
