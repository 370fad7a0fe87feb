"""``Patient/[id]/$everything`` and ``Patient/$everything`` (R4 Patient operations).

The compartment is read through the ``compartment_patient_id`` column, page by
page on a (type, id) keyset, so a lifelong record of any size streams without
being held in memory; each page also carries the resources its entries refer to
outside the compartment (practitioners, organisations, medications...).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import orjson
from sqlalchemy import Connection

from ehr_service.fhir.errors import Category, FhirError
from ehr_service.fhir.primitives import format_instant, new_id, parse_instant_param, utc_now
from ehr_service.fhir.resource_types import R4_RESOURCE_TYPES, check_type_parameter
from ehr_service.interactions.context import RequestContext
from ehr_service.interactions.paging import first_value, page_size
from ehr_service.interactions.read import current_or_fail
from ehr_service.interactions.results import Result
from ehr_service.security.policy import require, require_admin
from ehr_service.storage import search_queries
from ehr_service.storage.search_queries import Found


def _cursor(raw: str | None) -> tuple[str, str] | None:
    if raw is None:
        return None
    resource_type, _, resource_id = raw[1:].partition("/")
    if not raw.startswith("k") or resource_type not in R4_RESOURCE_TYPES or not resource_id:
        raise FhirError.of(
            Category.INCORRECT,
            "_cursor is not a cursor this server issued",
            code="value",
            expression=["_cursor"],
        )
    return resource_type, resource_id


def _readable_types(ctx: RequestContext, requested: list[str] | None) -> list[str] | None:
    """The requested types the caller's scopes let it read (None: every type)."""
    if ctx.caller.may("*", "r"):
        return requested
    return sorted(t for t in requested or R4_RESOURCE_TYPES if ctx.caller.may(t, "r"))


def everything(conn: Connection, ctx: RequestContext, patient_id: str | None) -> Result:
    if patient_id is None:
        require_admin(ctx.caller)  # every resident's record: a bulk operation
    else:
        require(ctx.caller, "Patient", "r")
        current_or_fail(conn, "Patient", patient_id, view=ctx.view)
    query = ctx.query
    count = page_size(query, ctx.settings)
    since_raw = first_value(query, "_since")
    since = parse_instant_param(since_raw, "_since") if since_raw is not None else None
    types_raw = first_value(query, "_type")
    types = [t.strip() for t in types_raw.split(",")] if types_raw else None
    check_type_parameter(types or [])
    types = _readable_types(ctx, types)
    if types == []:
        raise FhirError.of(
            Category.FORBIDDEN, "The token's scopes allow reading none of these types"
        )
    cursor_raw = first_value(query, "_cursor")
    after = _cursor(cursor_raw)
    found = search_queries.compartment_page(
        conn, patient_id, types=types, since=since, after=after, limit=count + 1, view=ctx.view
    )
    has_next = len(found) > count
    found = found[:count]
    included = _outside_the_record(conn, ctx, patient_id, found, after, types, since)

    path = f"Patient/{patient_id}/$everything" if patient_id else "Patient/$everything"
    params = [("_count", str(count))]
    if since_raw is not None:
        params.append(("_since", since_raw))
    if types_raw:
        params.append(("_type", types_raw))

    def link(cursor: str | None) -> str:
        items = params + ([("_cursor", cursor)] if cursor else [])
        return f"{ctx.base_url}/{path}?" + "&".join(
            f"{k}={quote(v, safe=',:-._/')}" for k, v in items
        )

    links = [{"relation": "self", "url": link(cursor_raw)}]
    if has_next and found:
        links.append(
            {"relation": "next", "url": link(f"k{found[-1].resource_type}/{found[-1].resource_id}")}
        )
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": new_id(),
        "meta": {"lastUpdated": format_instant(utc_now())},
        "type": "searchset",
    }
    if cursor_raw is None:
        bundle["total"] = search_queries.compartment_count(conn, patient_id, types, since, ctx.view)
    bundle["link"] = links
    entries = [_entry(ctx, f, "match") for f in found] + [
        _entry(ctx, f, "include") for f in included
    ]
    if entries:
        bundle["entry"] = entries
    owners = [patient_id, *(f.owner for f in found), *(f.owner for f in included)]
    return Result(200, bundle, patients=Result.owners(*owners))


def _outside_the_record(
    conn: Connection,
    ctx: RequestContext,
    patient_id: str | None,
    found: list[Found],
    after: tuple[str, str] | None,
    types: list[str] | None,
    since: Any,
) -> list[Found]:
    """The resources outside the compartment that this page's resources refer to
    (practitioners, organisations, medications...), each once across all pages: on
    the page of the first resource (in keyset order) that refers to it. A resource
    of the compartment is a match on its own page, never an include."""
    page_ids = {(f.resource_type, f.resource_id) for f in found}
    referenced = [
        r
        for r in dict.fromkeys(
            search_queries.references_from(conn, list(page_ids), {f.owner for f in found})
        )
        if r not in page_ids and r[0] != "Patient" and (not types or r[0] in types)
    ]
    if not referenced:
        return []
    earlier = search_queries.referenced_before(
        conn, patient_id, referenced, before=after, types=types, since=since, view=ctx.view
    )
    wanted = [r for r in referenced if r not in earlier]
    outside = [
        f
        for f in (search_queries.read_many(conn, wanted, ctx.view) if wanted else [])
        if f.owner is None or (patient_id is not None and f.owner != patient_id)
    ]
    return sorted(outside, key=lambda f: (f.resource_type, f.resource_id))


def _entry(ctx: RequestContext, found: Found, mode: str) -> dict[str, Any]:
    return {
        "fullUrl": f"{ctx.base_url}/{found.resource_type}/{found.resource_id}",
        "resource": orjson.Fragment(found.content),
        "search": {"mode": mode},
    }
