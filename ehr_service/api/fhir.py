"""The FHIR REST endpoints at ``/fhir`` (R4 §3.1.0). Handlers are thin: they
check the URL and headers, then run one interaction in a worker thread."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from starlette.responses import Response

from ehr_service.api import openapi_docs as docs
from ehr_service.api.deps import Context, PublicContext, RenderingDep
from ehr_service.api.errors import method_not_allowed
from ehr_service.api.handling import (
    JSON_BODY,
    IfMatch,
    IfNoneMatch,
    ResourceId,
    ResourceType,
    VersionId,
    etag,
    in_read,
    in_write,
    json_body,
    patch_body,
    with_form_query,
    with_parameters_query,
)
from ehr_service.api.negotiation import strict_handling
from ehr_service.api.rendering import render_result
from ehr_service.fhir.errors import Category, FhirError
from ehr_service.interactions import (
    audit_events,
    bundle,
    conditional,
    create,
    delete,
    dispatch,
    everything,
    history,
    patch,
    read,
    search,
    update,
)
from ehr_service.interactions.context import RequestContext
from ehr_service.interactions.results import Result
from ehr_service.interactions.routing import check_id, check_type

router = APIRouter(prefix="/fhir", tags=["FHIR R4"])

# Importable from here as before (defined in api/handling.py).
__all__ = [
    "JSON_BODY",
    "ResourceId",
    "ResourceType",
    "in_read",
    "in_write",
    "json_body",
    "router",
    "with_form_query",
    "with_parameters_query",
]


_RESERVED = {"metadata", "_history", "_search", ".well-known"}


def _type(request: Request, resource_type: str) -> str:
    """The URL's resource type; a reserved segment (``/fhir/metadata``) with another
    method than its own is a 405, not an unknown type."""
    if resource_type in _RESERVED or resource_type.startswith("$"):  # $export, $...-stats
        raise method_not_allowed(request)
    if resource_type in audit_events.READ_ONLY_TYPES:  # what api.audit does not serve
        raise audit_events.read_only(
            resource_type, request.method, request.url.path.removeprefix("/fhir")
        )
    return check_type(resource_type)


def _instance(request: Request, resource_type: str, resource_id: str) -> tuple[str, str]:
    if resource_id in _RESERVED or resource_id.startswith("$"):  # _search, $everything...
        raise method_not_allowed(request)
    return _type(request, resource_type), check_id(resource_id)


def _write_response(result: Result, ctx: RequestContext, rendering: RenderingDep) -> Response:
    return render_result(result.shaped(ctx.prefer_return), ctx, rendering)


@router.get("/metadata", **docs.route("CapabilityStatement", {200}))
async def capabilities(ctx: PublicContext, rendering: RenderingDep) -> Response:
    return render_result(dispatch.capabilities(ctx), ctx, rendering)


@router.post(
    "",
    **docs.route(
        "batch or transaction", {200, 400, 404, 409, 410, 412, 413, 415, 422, 501}, body="Bundle"
    ),
)
# [base]/ as many clients send it: answered here, not redirected (a 307 loses the
# POST for clients that do not resend it).
@router.post("/", include_in_schema=False, name="batch_or_transaction")
async def batch_or_transaction(request: Request, ctx: Context, rendering: RenderingDep) -> Response:
    body = await json_body(request, JSON_BODY)
    result = await run_in_threadpool(bundle.process_bundle, ctx, body)
    return render_result(result, ctx, rendering)


@router.get("/Patient/$everything", **docs.route("everything", {200, 400}))
@router.post("/Patient/$everything", **docs.route("everything", {200, 400}, body="resource"))
async def everything_all(request: Request, ctx: Context, rendering: RenderingDep) -> Response:
    """All patients' compartments, paged (for system callers once access control lands)."""
    ctx = await with_parameters_query(request, ctx, "$everything")
    result = await run_in_threadpool(in_read, ctx, lambda c: everything.everything(c, ctx, None))
    return render_result(result, ctx, rendering)


@router.get("/Patient/{resource_id}/$everything", **docs.route("everything", {200, 400, 404, 410}))
@router.post(
    "/Patient/{resource_id}/$everything",
    **docs.route("everything", {200, 400, 404, 410}, body="resource"),
)
async def everything_patient(
    request: Request, resource_id: ResourceId, ctx: Context, rendering: RenderingDep
) -> Response:
    pid = check_id(resource_id)
    ctx = await with_parameters_query(request, ctx, "$everything")
    result = await run_in_threadpool(in_read, ctx, lambda c: everything.everything(c, ctx, pid))
    return render_result(result, ctx, rendering)


@router.get("/_history", **docs.route("history (system)", {200, 400}))
async def history_system(ctx: Context, rendering: RenderingDep) -> Response:
    result = await run_in_threadpool(in_read, ctx, lambda c: history.history(c, ctx))
    return render_result(result, ctx, rendering)


@router.get("/{resource_type}/_history", **docs.route("history (type)", {200, 400, 404}))
async def history_type(
    request: Request, resource_type: ResourceType, ctx: Context, rendering: RenderingDep
) -> Response:
    rtype = _type(request, resource_type)
    result = await run_in_threadpool(in_read, ctx, lambda c: history.history(c, ctx, rtype))
    return render_result(result, ctx, rendering)


@router.get("/{resource_type}", **docs.route("search", {200, 400, 404, 501}))
async def search_get(
    request: Request, resource_type: ResourceType, ctx: Context, rendering: RenderingDep
) -> Response:
    rtype = _type(request, resource_type)
    strict = strict_handling(request)
    result = await run_in_threadpool(
        in_read, ctx, lambda c: search.search(c, ctx, rtype, strict=strict)
    )
    return render_result(result, ctx, rendering)


@router.post(
    "/{resource_type}/_search", **docs.route("search", {200, 400, 404, 415, 501}, body="form")
)
async def search_post(
    request: Request, resource_type: ResourceType, ctx: Context, rendering: RenderingDep
) -> Response:
    """POST [type]/_search: parameters in a form body, merged with the URL's (R4 §3.1.1)."""
    rtype = _type(request, resource_type)
    scoped = await with_form_query(request, ctx)
    strict = strict_handling(request)
    result = await run_in_threadpool(
        in_read, ctx, lambda c: search.search(c, scoped, rtype, strict=strict)
    )
    return render_result(result, ctx, rendering)


@router.post(
    "/{resource_type}",
    **docs.route("create", {200, 201, 400, 404, 409, 412, 413, 415, 422}, body="resource"),
)
async def create_resource(
    request: Request, resource_type: ResourceType, ctx: Context, rendering: RenderingDep
) -> Response:
    rtype = _type(request, resource_type)
    criteria = request.headers.get("if-none-exist")
    body = await json_body(request, JSON_BODY)
    if criteria is not None:
        result = await run_in_threadpool(
            in_write,
            ctx,
            lambda c: conditional.conditional_create(c, ctx, rtype, body, criteria),
        )
    else:
        result = await run_in_threadpool(
            in_write, ctx, lambda c: create.create(c, ctx, rtype, body)
        )
    return _write_response(result, ctx, rendering)


def _criteria(ctx: RequestContext) -> dict[str, list[str]]:
    criteria = {k: v for k, v in ctx.query.items() if k not in {"_format", "_pretty"}}
    if not criteria:
        raise FhirError.of(
            Category.INCORRECT,
            "A conditional interaction needs search criteria in the URL",
            code="required",
        )
    return criteria


@router.put(
    "/{resource_type}",
    **docs.route(
        "conditional update", {200, 201, 400, 404, 409, 412, 413, 415, 422}, body="resource"
    ),
)
async def conditional_update(
    request: Request,
    resource_type: ResourceType,
    ctx: Context,
    rendering: RenderingDep,
    if_match: IfMatch = None,
) -> Response:
    rtype, criteria = _type(request, resource_type), _criteria(ctx)
    expected = etag(if_match, "If-Match")
    body = await json_body(request, JSON_BODY)
    result = await run_in_threadpool(
        in_write,
        ctx,
        lambda c: conditional.conditional_update(c, ctx, rtype, body, criteria, expected),
    )
    return _write_response(result, ctx, rendering)


@router.patch(
    "/{resource_type}",
    **docs.route("conditional patch", {200, 400, 404, 409, 412, 413, 415, 422}, body="patch"),
)
async def conditional_patch(
    request: Request,
    resource_type: ResourceType,
    ctx: Context,
    rendering: RenderingDep,
    if_match: IfMatch = None,
) -> Response:
    rtype, criteria = _type(request, resource_type), _criteria(ctx)
    expected = etag(if_match, "If-Match")
    document = await patch_body(request)
    result = await run_in_threadpool(
        in_write,
        ctx,
        lambda c: conditional.conditional_patch(c, ctx, rtype, document, criteria, expected),
    )
    return _write_response(result, ctx, rendering)


@router.delete("/{resource_type}", **docs.route("conditional delete", {200, 204, 400, 404, 412}))
async def conditional_delete(
    request: Request, resource_type: ResourceType, ctx: Context, rendering: RenderingDep
) -> Response:
    rtype, criteria = _type(request, resource_type), _criteria(ctx)
    result = await run_in_threadpool(
        in_write, ctx, lambda c: conditional.conditional_delete(c, ctx, rtype, criteria)
    )
    return _write_response(result, ctx, rendering)


@router.get("/{resource_type}/{resource_id}", **docs.route("read", {200, 304, 400, 404, 410}))
async def read_resource(
    request: Request,
    resource_type: ResourceType,
    resource_id: ResourceId,
    ctx: Context,
    rendering: RenderingDep,
    if_none_match: IfNoneMatch = None,
) -> Response:
    rtype, rid = _instance(request, resource_type, resource_id)
    known = etag(if_none_match, "If-None-Match")
    result = await run_in_threadpool(in_read, ctx, lambda c: read.read(c, ctx, rtype, rid, known))
    return render_result(result, ctx, rendering)


@router.put(
    "/{resource_type}/{resource_id}",
    **docs.route("update", {200, 201, 400, 404, 409, 412, 413, 415, 422}, body="resource"),
)
async def update_resource(
    request: Request,
    resource_type: ResourceType,
    resource_id: ResourceId,
    ctx: Context,
    rendering: RenderingDep,
    if_match: IfMatch = None,
) -> Response:
    rtype, rid = _instance(request, resource_type, resource_id)
    expected = etag(if_match, "If-Match")
    body = await json_body(request, JSON_BODY)
    result = await run_in_threadpool(
        in_write, ctx, lambda c: update.update(c, ctx, rtype, rid, body, expected)
    )
    return _write_response(result, ctx, rendering)


@router.patch(
    "/{resource_type}/{resource_id}",
    **docs.route("patch", {200, 400, 404, 409, 410, 412, 413, 415, 422}, body="patch"),
)
async def patch_resource(
    request: Request,
    resource_type: ResourceType,
    resource_id: ResourceId,
    ctx: Context,
    rendering: RenderingDep,
    if_match: IfMatch = None,
) -> Response:
    rtype, rid = _instance(request, resource_type, resource_id)
    expected = etag(if_match, "If-Match")
    document = await patch_body(request)
    result = await run_in_threadpool(
        in_write, ctx, lambda c: patch.patch(c, ctx, rtype, rid, document, expected)
    )
    return _write_response(result, ctx, rendering)


@router.delete(
    "/{resource_type}/{resource_id}", **docs.route("delete", {200, 204, 400, 404, 409, 412})
)
async def delete_resource(
    request: Request,
    resource_type: ResourceType,
    resource_id: ResourceId,
    ctx: Context,
    rendering: RenderingDep,
    if_match: IfMatch = None,
) -> Response:
    rtype, rid = _instance(request, resource_type, resource_id)
    expected = etag(if_match, "If-Match")
    result = await run_in_threadpool(
        in_write, ctx, lambda c: delete.delete(c, ctx, rtype, rid, expected)
    )
    return _write_response(result, ctx, rendering)


@router.get(
    "/{resource_type}/{resource_id}/_history", **docs.route("history (instance)", {200, 400, 404})
)
async def history_instance(
    request: Request,
    resource_type: ResourceType,
    resource_id: ResourceId,
    ctx: Context,
    rendering: RenderingDep,
) -> Response:
    rtype, rid = _instance(request, resource_type, resource_id)
    result = await run_in_threadpool(in_read, ctx, lambda c: history.history(c, ctx, rtype, rid))
    return render_result(result, ctx, rendering)


@router.get(
    "/{resource_type}/{resource_id}/_history/{version_id}",
    **docs.route("vread", {200, 400, 404, 410}),
)
async def vread_resource(
    request: Request,
    resource_type: ResourceType,
    resource_id: ResourceId,
    version_id: VersionId,
    ctx: Context,
    rendering: RenderingDep,
) -> Response:
    rtype, rid = _instance(request, resource_type, resource_id)
    result = await run_in_threadpool(
        in_read, ctx, lambda c: read.vread(c, ctx, rtype, rid, version_id)
    )
    return render_result(result, ctx, rendering)
