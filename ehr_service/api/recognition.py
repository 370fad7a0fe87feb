"""Mutual recognition operations (DESIGN.md §7) under ``/fhir``. Registered before
the generic FHIR routes (``/fhir/$recognition-stats`` is an operation, not a type)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from starlette.responses import Response

from ehr_service.api import openapi_docs as docs
from ehr_service.api.deps import Context, RenderingDep
from ehr_service.api.fhir import JSON_BODY, ResourceId, in_read, in_write, json_body
from ehr_service.api.rendering import render_result
from ehr_service.interactions import recognition
from ehr_service.interactions.routing import check_id

router = APIRouter(prefix="/fhir", tags=["Mutual recognition"])


@router.post(
    "/Patient/{resource_id}/$recognizable-results",
    **docs.route("recognizable-results", {200, 404, 415, 422}, body="resource"),
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
    **docs.route("recognition-decision", {201, 404, 415, 422}, body="resource"),
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
