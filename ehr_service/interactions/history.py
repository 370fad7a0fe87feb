"""history at instance, type and system level (R4 §3.1.0.12): ``_since``, ``_count``.

Newest first; each entry carries the request that made the version and its
response (status, ETag, lastModified). Stored content is embedded as is.
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import Connection

from ehr_service.fhir.primitives import etag, format_instant, new_id, parse_instant_param, utc_now
from ehr_service.interactions.context import RequestContext
from ehr_service.interactions.paging import (
    CURSOR_PARAM,
    first_value,
    page_size,
    page_url,
    parse_cursor,
)
from ehr_service.interactions.read import check_consent, not_found, visible_to
from ehr_service.interactions.results import Result, status_line
from ehr_service.security.policy import require
from ehr_service.storage import resources
from ehr_service.storage.resources import HistoryQuery, StoredVersion

_STATUS_BY_METHOD = {"POST": 201, "PUT": 200, "PATCH": 200, "DELETE": 204}


def _entry(base_url: str, version: StoredVersion) -> dict[str, Any]:
    relative = f"{version.resource_type}/{version.resource_id}"
    status = 201 if version.version_id == 1 else _STATUS_BY_METHOD.get(version.method, 200)
    entry: dict[str, Any] = {"fullUrl": f"{base_url}/{relative}"}
    if version.content is not None:
        entry["resource"] = orjson.Fragment(version.content)
    entry["request"] = {
        "method": version.method,
        "url": version.resource_type if version.method == "POST" else relative,
    }
    entry["response"] = {
        "status": status_line(status),
        "etag": etag(version.version_id),
        "lastModified": format_instant(version.last_updated),
    }
    return entry


def history(
    conn: Connection,
    ctx: RequestContext,
    resource_type: str | None = None,
    resource_id: str | None = None,
) -> Result:
    require(ctx.caller, resource_type or "*", "r" if resource_id else "s")
    query = ctx.query
    count = page_size(query, ctx.settings)
    since_raw = first_value(query, "_since")
    since = parse_instant_param(since_raw, "_since") if since_raw is not None else None
    cursor = parse_cursor(query)
    view = ctx.view
    if resource_type and resource_id:
        current = resources.read_current(conn, resource_type, resource_id)
        if current is None or not visible_to(conn, view, resource_type, resource_id, current):
            raise not_found(resource_type, resource_id)
        check_consent(conn, view, current.compartment_patient_id)

    base_query = HistoryQuery(resource_type, resource_id, since, view=view)
    page = HistoryQuery(
        resource_type, resource_id, since, cursor.before, cursor.after, count + 1, view
    )
    versions = resources.history(conn, page) if count else []
    has_more = len(versions) > count
    if has_more:
        # the extra row sits beyond the page: oldest end normally, newest end when going back
        versions = versions[1:] if cursor.after is not None else versions[:-1]

    path = "/".join(p for p in (resource_type, resource_id, "_history") if p)
    link_base = f"{ctx.base_url}/{path}"
    params: dict[str, str | None] = {"_count": str(count), "_since": since_raw}
    links = [{"relation": "self", "url": page_url(link_base, {**params, **_cursor_param(query)})}]
    older_exist = has_more if cursor.after is None else True
    newer_exist = not cursor.is_first_page if cursor.after is None else has_more
    if versions and older_exist:
        links.append(
            {
                "relation": "next",
                "url": page_url(link_base, {**params, CURSOR_PARAM: f"b{versions[-1].seq}"}),
            }
        )
    if versions and newer_exist:
        links.append(
            {
                "relation": "previous",
                "url": page_url(link_base, {**params, CURSOR_PARAM: f"a{versions[0].seq}"}),
            }
        )

    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": new_id(),
        "meta": {"lastUpdated": format_instant(utc_now())},
        "type": "history",
    }
    if resource_id is not None:
        bundle["total"] = resources.count_history(conn, base_query)
    bundle["link"] = links
    bundle["entry"] = [_entry(ctx.base_url, v) for v in versions]
    if not bundle["entry"]:
        del bundle["entry"]
    return Result(
        200, bundle, patients=Result.owners(*(v.compartment_patient_id for v in versions))
    )


def _cursor_param(query: dict[str, list[str]]) -> dict[str, str | None]:
    value = first_value(query, CURSOR_PARAM)
    return {CURSOR_PARAM: value} if value else {}
