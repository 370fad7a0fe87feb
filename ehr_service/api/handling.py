"""What every FHIR handler does around its interaction (R4 §3.1.0): its path and
header parameters, its body read (JSON, or FHIR XML converted to it), the URL's
parameters joined by a form or a Parameters body, and the one unit of work it runs
in with its audit event."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import Header, Path, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Connection

from ehr_service.api import openapi_docs as docs
from ehr_service.api.negotiation import RESOURCE_TYPES, check_content_type, is_xml_body
from ehr_service.fhir import xml
from ehr_service.fhir.parameters import OperationInput
from ehr_service.fhir.primitives import parse_etag
from ehr_service.fhir.validation import parse_json
from ehr_service.interactions.context import RequestContext
from ehr_service.interactions.patch import (
    JSON_PATCH_MEDIA_TYPE,
    MERGE_PATCH_MEDIA_TYPE,
    PatchDocument,
    patch_document,
)
from ehr_service.interactions.results import Result

ResourceType = Annotated[str, Path(description="An R4 resource type", **docs.TYPE_PARAM)]
ResourceId = Annotated[str, Path(description="Logical id", **docs.ID_PARAM)]
VersionId = Annotated[str, Path(description="Version id", **docs.ID_PARAM)]
IfMatch = Annotated[str | None, Header(description='W/"<versionId>"', **docs.ETAG_PARAM)]
IfNoneMatch = Annotated[str | None, Header(description='W/"<versionId>"', **docs.ETAG_PARAM)]

JSON_BODY = RESOURCE_TYPES  # FHIR JSON, or FHIR XML converted to it
_FORM_BODY = frozenset({"application/x-www-form-urlencoded"})
# JSON Patch, merge patch, or FHIRPath Patch (a Parameters body in JSON or XML)
_PATCH_BODY = frozenset({JSON_PATCH_MEDIA_TYPE, MERGE_PATCH_MEDIA_TYPE}) | RESOURCE_TYPES


def in_read(ctx: RequestContext, action: Callable[[Connection], Result]) -> Result:
    """Run a read in a unit of work with its audit event (appended once the read
    ends; failures are audited by the error handler)."""
    with ctx.services.unit.read() as conn:
        result = action(conn)
        ctx.services.auditor.record(conn, ctx, result)
    return result


def in_write(ctx: RequestContext, action: Callable[[Connection], Result]) -> Result:
    """Run a write in a unit of work: it and its audit event commit together."""
    with ctx.services.unit.write() as conn:
        result = action(conn)
        ctx.services.auditor.record(conn, ctx, result)
    return result


async def json_body(request: Request, allowed: frozenset[str]) -> Any:
    """The body as parsed JSON; a FHIR XML body (where ``allowed`` takes it) is
    converted to JSON first and then read exactly as JSON would be."""
    check_content_type(request, allowed)
    raw = await request.body()
    if is_xml_body(request):
        raw = await run_in_threadpool(xml.xml_to_json, raw)
    return parse_json(raw)


async def with_form_query(request: Request, ctx: RequestContext) -> RequestContext:
    """POST ``_search``: the form body's parameters merged with the URL's (R4 §3.1.1)."""
    check_content_type(request, _FORM_BODY)
    form = parse_qs((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
    return _joined(ctx, form)


def _joined(ctx: RequestContext, extra: dict[str, list[str]]) -> RequestContext:
    """``ctx`` with ``extra`` parameters after the URL's (a name in both has both)."""
    query = {k: list(v) for k, v in ctx.query.items()}
    for key, values in extra.items():
        query.setdefault(key, []).extend(values)
    return replace(ctx, query=query)


async def with_parameters_query(
    request: Request, ctx: RequestContext, operation: str
) -> RequestContext:
    """An operation invoked by POST (R4 §3.1.0.4): the primitive parameters of its
    Parameters body (if any) join the URL's, as a GET would send them."""
    if request.method != "POST" or not (await request.body()).strip():
        return ctx
    body = await json_body(request, JSON_BODY)
    return _joined(ctx, OperationInput(body, operation).as_query())


def etag(value: str | None, header: str) -> int | None:
    """An ETag header's version (``If-Match``, ``If-None-Match``), if it was sent."""
    return parse_etag(value, header) if value is not None else None


async def patch_body(request: Request) -> PatchDocument:
    """A PATCH body: JSON Patch, JSON merge patch or FHIRPath Patch, by its type."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower() or None
    return patch_document(media, await json_body(request, _PATCH_BODY))
