"""Terminology operations at ``/fhir/CodeSystem``, ``/fhir/ValueSet`` and
``/fhir/ConceptMap`` (the recognition catalogue). Registered before the generic
FHIR routes: ``/fhir/ValueSet/$expand`` is an operation, not a read."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Connection
from starlette.responses import Response

from ehr_service.api import openapi_docs as docs
from ehr_service.api.deps import Context, RenderingDep
from ehr_service.api.fhir import JSON_BODY, ResourceId, in_read, json_body
from ehr_service.api.rendering import render_result
from ehr_service.interactions import terminology
from ehr_service.interactions.context import RequestContext
from ehr_service.interactions.results import Result
from ehr_service.interactions.routing import check_id

router = APIRouter(prefix="/fhir", tags=["Terminology"])
STATUSES = {200, 400, 404, 415}
ON_INSTANCE = STATUSES | {410}  # a stored instance may be deleted


async def _run(
    request: Request,
    ctx: RequestContext,
    rendering: Any,
    operation: Callable[[RequestContext, Any], Result],
) -> Response:
    body = await json_body(request, JSON_BODY) if request.method == "POST" else None
    result = await run_in_threadpool(in_read, ctx, lambda _c: operation(ctx, body))
    return render_result(result, ctx, rendering)


@router.get("/CodeSystem/$lookup", **docs.route("lookup", STATUSES))
@router.post("/CodeSystem/$lookup", **docs.route("lookup", STATUSES, body="resource"))
async def codesystem_lookup(request: Request, ctx: Context, rendering: RenderingDep) -> Response:
    """An item's names (zh, en) and properties (system, code, property)."""
    return await _run(request, ctx, rendering, terminology.lookup)


async def _run_on(
    request: Request,
    ctx: RequestContext,
    rendering: Any,
    instance: tuple[str, str],
    operation: Callable[[RequestContext, Any, str], Result],
) -> Response:
    """An operation invoked on a stored instance: on the canonical url it has."""
    body = await json_body(request, JSON_BODY) if request.method == "POST" else None
    resource_type, rid = instance[0], check_id(instance[1])

    def run(conn: Connection) -> Result:
        return operation(ctx, body, terminology.instance_url(conn, ctx, resource_type, rid))

    result = await run_in_threadpool(in_read, ctx, run)
    return render_result(result, ctx, rendering)


@router.get("/CodeSystem/$validate-code", **docs.route("validate-code", STATUSES))
@router.post("/CodeSystem/$validate-code", **docs.route("validate-code", STATUSES, body="resource"))
async def codesystem_validate_code(
    request: Request, ctx: Context, rendering: RenderingDep
) -> Response:
    return await _run(
        request, ctx, rendering, lambda c, b: terminology.validate_code(c, b, "CodeSystem")
    )


@router.get("/CodeSystem/{resource_id}/$validate-code", **docs.route("validate-code", ON_INSTANCE))
@router.post(
    "/CodeSystem/{resource_id}/$validate-code",
    **docs.route("validate-code", ON_INSTANCE, body="resource"),
)
async def codesystem_validate_code_instance(
    resource_id: ResourceId, request: Request, ctx: Context, rendering: RenderingDep
) -> Response:
    return await _run_on(
        request, ctx, rendering, ("CodeSystem", resource_id),
        lambda c, b, url: terminology.validate_code(c, b, "CodeSystem", url),
    )  # fmt: skip


@router.get("/ValueSet/$validate-code", **docs.route("validate-code", STATUSES))
@router.post("/ValueSet/$validate-code", **docs.route("validate-code", STATUSES, body="resource"))
async def valueset_validate_code(
    request: Request, ctx: Context, rendering: RenderingDep
) -> Response:
    return await _run(
        request, ctx, rendering, lambda c, b: terminology.validate_code(c, b, "ValueSet")
    )


@router.get("/ValueSet/{resource_id}/$validate-code", **docs.route("validate-code", ON_INSTANCE))
@router.post(
    "/ValueSet/{resource_id}/$validate-code",
    **docs.route("validate-code", ON_INSTANCE, body="resource"),
)
async def valueset_validate_code_instance(
    resource_id: ResourceId, request: Request, ctx: Context, rendering: RenderingDep
) -> Response:
    return await _run_on(
        request, ctx, rendering, ("ValueSet", resource_id),
        lambda c, b, url: terminology.validate_code(c, b, "ValueSet", url),
    )  # fmt: skip


@router.get("/ValueSet/$expand", **docs.route("expand", STATUSES))
@router.post("/ValueSet/$expand", **docs.route("expand", STATUSES, body="resource"))
async def valueset_expand(request: Request, ctx: Context, rendering: RenderingDep) -> Response:
    """The items of a catalogue value set (url, filter, count, offset)."""
    return await _run(request, ctx, rendering, terminology.expand)


@router.get("/ValueSet/{resource_id}/$expand", **docs.route("expand", STATUSES))
@router.post("/ValueSet/{resource_id}/$expand", **docs.route("expand", STATUSES, body="resource"))
async def valueset_expand_instance(
    resource_id: ResourceId, request: Request, ctx: Context, rendering: RenderingDep
) -> Response:
    return await _run_on(request, ctx, rendering, ("ValueSet", resource_id), terminology.expand)


@router.get("/ConceptMap/$translate", **docs.route("translate", STATUSES))
@router.post("/ConceptMap/$translate", **docs.route("translate", STATUSES, body="resource"))
async def conceptmap_translate(request: Request, ctx: Context, rendering: RenderingDep) -> Response:
    """A LOINC or local code to its catalogue item (system, code)."""
    return await _run(request, ctx, rendering, terminology.translate)


@router.get("/ConceptMap/{resource_id}/$translate", **docs.route("translate", ON_INSTANCE))
@router.post(
    "/ConceptMap/{resource_id}/$translate", **docs.route("translate", ON_INSTANCE, body="resource")
)
async def conceptmap_translate_instance(
    resource_id: ResourceId, request: Request, ctx: Context, rendering: RenderingDep
) -> Response:
    return await _run_on(
        request, ctx, rendering, ("ConceptMap", resource_id), terminology.translate
    )
