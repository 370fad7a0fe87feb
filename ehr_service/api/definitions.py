"""``/fhir/OperationDefinition``: the definitions the CapabilityStatement's operations
name, read-only: any valid token reads them (no scope needed; conformance data, not
audited). Registered before the generic FHIR routes; a write reaches those and is a
405."""

from __future__ import annotations

from fastapi import Request
from fastapi.routing import APIRouter
from starlette.responses import Response

from ehr_service.api import openapi_docs as docs
from ehr_service.api.deps import Context, RenderingDep
from ehr_service.api.errors import method_not_allowed
from ehr_service.api.handling import ResourceId, with_form_query
from ehr_service.api.rendering import render_result
from ehr_service.fhir.errors import Category, FhirError
from ehr_service.interactions import operation_definitions

router = APIRouter(prefix="/fhir", tags=["FHIR R4"])


@router.get("/OperationDefinition", **docs.route("search definitions", {200, 400}))
async def definitions_search(request: Request, ctx: Context, rendering: RenderingDep) -> Response:
    """The operations' definitions: _id, url, name, code."""
    result = operation_definitions.search(ctx)
    return render_result(result, ctx, rendering)


@router.post(
    "/OperationDefinition/_search",
    **docs.route("search definitions", {200, 400, 415}, body="form"),
)
async def definitions_search_post(
    request: Request, ctx: Context, rendering: RenderingDep
) -> Response:
    if "content-type" not in request.headers:  # R4 §3.1.1: the parameters come as a form
        raise FhirError.of(
            Category.UNSUPPORTED_MEDIA_TYPE,
            "POST _search takes its parameters as application/x-www-form-urlencoded",
        )
    scoped = await with_form_query(request, ctx)
    result = operation_definitions.search(scoped)
    return render_result(result, ctx, rendering)


@router.get("/OperationDefinition/{resource_id}", **docs.route("read", {200, 404}))
async def definition_read(
    request: Request, resource_id: ResourceId, ctx: Context, rendering: RenderingDep
) -> Response:
    if resource_id.startswith(("_", "$")):  # GET of _search or _history: a 405, not an id
        raise method_not_allowed(request)
    return render_result(operation_definitions.read(ctx, resource_id), ctx, rendering)
