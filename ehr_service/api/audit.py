"""``/fhir/AuditEvent``: the audit trail, read-only (docs/architecture.md §9). Registered
before the generic FHIR routes; a write to AuditEvent reaches those and is a 405."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from starlette.responses import Response

from ehr_service.api import openapi_docs as docs
from ehr_service.api.deps import Context, RenderingDep
from ehr_service.api.errors import method_not_allowed
from ehr_service.api.handling import ResourceId, in_read, with_form_query
from ehr_service.api.rendering import render_result
from ehr_service.interactions import audit_events

router = APIRouter(prefix="/fhir", tags=["FHIR R4"])


@router.get("/AuditEvent", **docs.route("search", {200, 400}))
async def audit_search(ctx: Context, rendering: RenderingDep) -> Response:
    """The service's hash-chained events (ehr/audit scope): patient, date, agent,
    entity, type, subtype, outcome, _count; newest first."""
    result = await run_in_threadpool(in_read, ctx, lambda c: audit_events.search(c, ctx))
    return render_result(result, ctx, rendering)


@router.post("/AuditEvent/_search", **docs.route("search", {200, 400, 415}, body="form"))
async def audit_search_post(request: Request, ctx: Context, rendering: RenderingDep) -> Response:
    scoped = await with_form_query(request, ctx)
    result = await run_in_threadpool(in_read, ctx, lambda c: audit_events.search(c, scoped))
    return render_result(result, ctx, rendering)


@router.get(
    "/AuditEvent/{resource_id}/$inclusion-proof",
    **docs.route("operation", {200, 400, 404}),
)
async def audit_inclusion_proof(
    resource_id: ResourceId, ctx: Context, rendering: RenderingDep
) -> Response:
    """The event's proof of inclusion in a signed block (a Parameters resource):
    the event's stored bytes, the block's signed statement, its JWS and the RFC
    9162 audit path; checkable with /.well-known/jwks.json alone."""
    result = await run_in_threadpool(
        in_read, ctx, lambda c: audit_events.inclusion_proof(c, ctx, resource_id)
    )
    return render_result(result, ctx, rendering)


@router.get("/AuditEvent/{resource_id}", **docs.route("read", {200, 400, 404}))
async def audit_read(
    request: Request, resource_id: ResourceId, ctx: Context, rendering: RenderingDep
) -> Response:
    if resource_id.startswith(("_", "$")):  # GET of /AuditEvent/_search: a 405, not an id
        raise method_not_allowed(request)
    result = await run_in_threadpool(in_read, ctx, lambda c: audit_events.read(c, ctx, resource_id))
    return render_result(result, ctx, rendering)
