"""Mutual recognition operations (docs/architecture.md §7) and ``$validate`` under ``/fhir``.
Registered before the generic FHIR routes (``/fhir/$recognition-stats`` is an
operation, not a type; ``/fhir/Observation/$validate`` not a read)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from starlette.responses import Response

from ehr_service.api import openapi_docs as docs
from ehr_service.api.deps import Context, RenderingDep
from ehr_service.api.handling import (
    JSON_BODY,
    ResourceId,
    ResourceType,
    in_read,
    in_write,
    json_body,
)
from ehr_service.api.rendering import render_result
from ehr_service.interactions import recognition, validate
from ehr_service.interactions.routing import check_id, check_type

router = APIRouter(prefix="/fhir", tags=["Mutual recognition"])


@router.post(
    "/Patient/{resource_id}/$recognizable-results",
    **docs.route("recognizable-results", {200, 404, 410, 415, 422}, body="resource"),
)
async def recognizable_results(
    resource_id: ResourceId, request: Request, ctx: Context, rendering: RenderingDep
) -> Response:
    """Prior results of the items asked for (Parameters: item, serviceRequest, asOf,
    requester), each with recognizable true/false, reasons and expiresOn."""
    pid = check_id(resource_id)
    body = await json_body(request, JSON_BODY)
    result = await run_in_threadpool(
        in_write, ctx, lambda c: recognition.recognizable_results(c, ctx, pid, body)
    )
    return render_result(result, ctx, rendering)


@router.post(
    "/Patient/{resource_id}/$recognition-decision",
    **docs.route("recognition-decision", {201, 404, 410, 415, 422}, body="resource"),
)
async def recognition_decision(
    resource_id: ResourceId, request: Request, ctx: Context, rendering: RenderingDep
) -> Response:
    """The doctor's decision for an order (Parameters: item or serviceRequest,
    decision accepted|retest, result, reason, reasonText, requester); a Task."""
    pid = check_id(resource_id)
    body = await json_body(request, JSON_BODY)
    result = await run_in_threadpool(
        in_write, ctx, lambda c: recognition.decision(c, ctx, pid, body)
    )
    return render_result(result, ctx, rendering)


@router.get("/$recognition-stats", **docs.route("recognition-stats", {200}))
async def recognition_stats(request: Request, ctx: Context, rendering: RenderingDep) -> Response:
    """Offered, accepted, re-tested by reason, tests and cost avoided (from, to,
    groupBy=item|institution|region)."""
    query = {k: request.query_params.getlist(k) for k in request.query_params}
    result = await run_in_threadpool(in_read, ctx, lambda c: recognition.stats(c, ctx, query))
    return render_result(result, ctx, rendering)


@router.post(
    "/{resource_type}/$validate",
    **docs.route("validate (type)", {200, 404, 415}, body="resource"),
)
async def validate_type(
    resource_type: ResourceType, request: Request, ctx: Context, rendering: RenderingDep
) -> Response:
    """Validate a resource (or Parameters: resource, profile, mode) without storing it:
    the model, required bindings, and a profile (``profile``, or the service's
    profiles claimed in meta.profile). 200 with an OperationOutcome."""
    rtype = check_type(resource_type)
    body = await json_body(request, JSON_BODY)
    result = await run_in_threadpool(
        in_read, ctx, lambda c: validate.validate(c, ctx, rtype, None, body)
    )
    return render_result(result, ctx, rendering)


@router.post(
    "/{resource_type}/{resource_id}/$validate",
    **docs.route("validate (instance)", {200, 404, 410, 415}, body="resource"),
)
async def validate_instance(
    resource_type: ResourceType,
    resource_id: ResourceId,
    request: Request,
    ctx: Context,
    rendering: RenderingDep,
) -> Response:
    """Validate a resource meant for this instance (or Parameters with mode=update or
    delete); without a resource, the stored one."""
    rtype, rid = check_type(resource_type), check_id(resource_id)
    raw = await request.body()
    body = await json_body(request, JSON_BODY) if raw else None
    result = await run_in_threadpool(
        in_read, ctx, lambda c: validate.validate(c, ctx, rtype, rid, body)
    )
    return render_result(result, ctx, rendering)


@router.get(
    "/{resource_type}/{resource_id}/$validate",
    **docs.route("validate (stored instance)", {200, 404, 410}),
)
async def validate_stored(
    resource_type: ResourceType, resource_id: ResourceId, ctx: Context, rendering: RenderingDep
) -> Response:
    """Validate the stored resource (``profile`` to check it against a profile)."""
    rtype, rid = check_type(resource_type), check_id(resource_id)
    result = await run_in_threadpool(
        in_read, ctx, lambda c: validate.validate(c, ctx, rtype, rid, None)
    )
    return render_result(result, ctx, rendering)
