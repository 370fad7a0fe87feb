"""Resident identity operations at ``/fhir/Patient/$...`` (docs/architecture.md §6): ``$match``,
``$merge`` and PIXm ``$ihe-pix``. Registered before the generic FHIR routes so that
``/fhir/Patient/$ihe-pix`` is an operation, not a read of an id."""

from __future__ import annotations

from dataclasses import replace

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from starlette.responses import Response

from ehr_service.api import openapi_docs as docs
from ehr_service.api.deps import Context, RenderingDep
from ehr_service.api.handling import JSON_BODY, ResourceId, in_read, in_write, json_body
from ehr_service.api.rendering import render_result
from ehr_service.fhir.errors import Category, FhirError
from ehr_service.fhir.parameters import OperationInput
from ehr_service.interactions import health_card, match, merge, pix
from ehr_service.interactions.routing import check_id

router = APIRouter(prefix="/fhir", tags=["Resident identity"])


def _escape(text: str) -> str:
    """A token search value part (R4 §3.1.1.4.14: escape \\ | , $)."""
    for char in ("\\", "|", ",", "$"):
        text = text.replace(char, "\\" + char)
    return text


@router.post("/Patient/$match", **docs.route("match", {200, 400, 415, 422}, body="resource"))
async def patient_match(request: Request, ctx: Context, rendering: RenderingDep) -> Response:
    """Scored candidate records of one person (Parameters: resource, onlyCertainMatches, count)."""
    body = await json_body(request, JSON_BODY)
    result = await run_in_threadpool(in_read, ctx, lambda c: match.match(c, ctx, body))
    return render_result(result, ctx, rendering)


@router.post(
    "/Patient/$merge", **docs.route("merge", {200, 400, 404, 410, 415, 422}, body="resource")
)
async def patient_merge(request: Request, ctx: Context, rendering: RenderingDep) -> Response:
    """Merge a duplicate record into the surviving one (Parameters: source-patient[-identifier],
    target-patient[-identifier], result-patient, preview)."""
    body = await json_body(request, JSON_BODY)
    result = await run_in_threadpool(in_write, ctx, lambda c: merge.merge(c, ctx, body))
    return render_result(result, ctx, rendering)


@router.get("/Patient/$ihe-pix", **docs.route("ihe-pix", {200, 400, 403, 404}))
async def patient_pix(
    ctx: Context,
    rendering: RenderingDep,
    source_identifier: str | None = Query(None, alias="sourceIdentifier"),
    target_system: list[str] = Query([], alias="targetSystem"),  # noqa: B008
) -> Response:
    """PIXm: the resident's identifiers in other domains."""
    result = await run_in_threadpool(
        in_read, ctx, lambda c: pix.ihe_pix(c, ctx, source_identifier, target_system)
    )
    return render_result(result, ctx, rendering)


@router.post(
    "/Patient/$ihe-pix", **docs.route("ihe-pix", {200, 400, 403, 404, 415}, body="resource")
)
async def patient_pix_post(request: Request, ctx: Context, rendering: RenderingDep) -> Response:
    """PIXm with a Parameters body (sourceIdentifier: valueIdentifier, targetSystem: valueUri)."""
    params = OperationInput(await json_body(request, JSON_BODY), "$ihe-pix")
    identifier = params.value("sourceIdentifier", "Identifier")
    source = None
    if identifier is not None:
        system, value = (
            (identifier.get("system"), identifier.get("value"))
            if isinstance(identifier, dict)
            else (None, None)
        )
        if not isinstance(system, str) or not isinstance(value, str):
            raise FhirError.of(
                Category.INCORRECT, "sourceIdentifier must be an Identifier with system and value"
            )
        source = f"{_escape(system)}|{_escape(value)}"
    raw_targets = [p.get("valueUri") for p in params.all("targetSystem")]
    if not all(isinstance(t, str) for t in raw_targets):
        raise FhirError.of(Category.INCORRECT, "targetSystem must be a valueUri")
    targets = [str(t) for t in raw_targets]
    result = await run_in_threadpool(in_read, ctx, lambda c: pix.ihe_pix(c, ctx, source, targets))
    return render_result(result, ctx, rendering)


@router.post(
    "/Patient/$resolve-health-card",
    **docs.route("resolve-health-card", {200, 400, 403, 404, 415, 501}, body="resource"),
)
async def resolve_health_card(request: Request, ctx: Context, rendering: RenderingDep) -> Response:
    """The Patient of a scanned e-health card (Parameters: qrCode, verificationCode for a
    static code, scene); each use is audited with its scene code."""
    body = await json_body(request, JSON_BODY)
    used = replace(ctx, query_string=f"scene={health_card.scene_of(body)}")  # on the event
    verifier = request.app.state.health_cards
    result = await run_in_threadpool(
        in_read, used, lambda c: health_card.resolve(c, used, body, verifier)
    )
    return render_result(result, used, rendering)


@router.post(
    "/Patient/{resource_id}/$bind-health-card",
    **docs.route("bind-health-card", {200, 400, 404, 409, 410, 415}, body="resource"),
)
async def bind_health_card(
    resource_id: ResourceId, request: Request, ctx: Context, rendering: RenderingDep
) -> Response:
    """Bind an e-health card (Parameters: cardId, 64 hexadecimal characters) to the resident."""
    pid = check_id(resource_id)
    body = await json_body(request, JSON_BODY)
    result = await run_in_threadpool(in_write, ctx, lambda c: health_card.bind(c, ctx, pid, body))
    return render_result(result, ctx, rendering)
