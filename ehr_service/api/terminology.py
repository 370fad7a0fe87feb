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
from ehr_service.api.handling import JSON_BODY, ResourceId, in_read, json_body
from ehr_service.api.rendering import render_result
from ehr_service.interactions import terminology
from ehr_service.interactions.context import RequestContext
from ehr_service.interactions.results import Result
from ehr_service.interactions.routing import check_id

router = APIRouter(prefix="/fhir", tags=["Terminology"])
STATUSES = {200, 400, 404, 415}
ON_INSTANCE = STATUSES | {410}  # a stored instance may be deleted


# An operation: (context, Parameters body or None, the instance's url or None).
Operation = Callable[[RequestContext, Any, str | None], Result]


async def _run(
    request: Request, ctx: RequestContext, rendering: Any, operation: Operation
) -> Response:
    body = await json_body(request, JSON_BODY) if request.method == "POST" else None
    result = await run_in_threadpool(in_read, ctx, lambda _c: operation(ctx, body, None))
    return render_result(result, ctx, rendering)


async def _run_on(
    request: Request,
    ctx: RequestContext,
    rendering: Any,
    instance: tuple[str, str],
    operation: Operation,
) -> Response:
    """An operation invoked on a stored instance: on the canonical url it has (a 404
    if there is no such instance, a 410 if it was deleted)."""
    body = await json_body(request, JSON_BODY) if request.method == "POST" else None
    resource_type, rid = instance[0], check_id(instance[1])

    def run(conn: Connection) -> Result:
        return operation(ctx, body, terminology.instance_url(conn, ctx, resource_type, rid))

    result = await run_in_threadpool(in_read, ctx, run)
    return render_result(result, ctx, rendering)


def _operation(
    resource_type: str,
    name: str,
    operation: Operation,
    description: str | None = None,
    on_instance: set[int] | None = None,
) -> None:
    """GET and POST ``[type]/$name`` and, with ``on_instance`` (its documented
    statuses), ``[type]/{id}/$name``. The endpoints are named as the operation
    (``valueset_expand``, ``valueset_expand_instance``): their OpenAPI ids."""
    endpoint_name = f"{resource_type.lower()}_{name.replace('-', '_')}"

    async def on_type(request: Request, ctx: Context, rendering: RenderingDep) -> Response:
        return await _run(request, ctx, rendering, operation)

    async def on_stored(
        resource_id: ResourceId, request: Request, ctx: Context, rendering: RenderingDep
    ) -> Response:
        return await _run_on(request, ctx, rendering, (resource_type, resource_id), operation)

    def register(
        path: str,
        endpoint: Callable[..., Any],
        endpoint_name: str,
        statuses: set[int],
        doc: str | None,
    ) -> None:
        endpoint.__name__ = endpoint.__qualname__ = endpoint_name
        endpoint.__doc__ = doc  # the OpenAPI description
        router.post(path, **docs.route(name, statuses, body="resource"))(endpoint)
        router.get(path, **docs.route(name, statuses))(endpoint)

    register(f"/{resource_type}/${name}", on_type, endpoint_name, STATUSES, description)
    if on_instance is not None:
        path = f"/{resource_type}/{{resource_id}}/${name}"
        register(path, on_stored, f"{endpoint_name}_instance", on_instance, None)


_operation(
    "CodeSystem",
    "lookup",
    lambda ctx, body, _url: terminology.lookup(ctx, body),
    "An item's names (zh, en) and properties (system, code, property).",
)
_operation(
    "CodeSystem",
    "validate-code",
    lambda ctx, body, url: terminology.validate_code(ctx, body, "CodeSystem", url),
    on_instance=ON_INSTANCE,
)
_operation(
    "ValueSet",
    "validate-code",
    lambda ctx, body, url: terminology.validate_code(ctx, body, "ValueSet", url),
    on_instance=ON_INSTANCE,
)
_operation(
    "ValueSet",
    "expand",
    terminology.expand,
    "The items of a catalogue value set (url, filter, count, offset).",
    on_instance=ON_INSTANCE,
)
_operation(
    "ConceptMap",
    "translate",
    terminology.translate,
    "A LOINC or local code to its catalogue item (system, code).",
    on_instance=ON_INSTANCE,
)
