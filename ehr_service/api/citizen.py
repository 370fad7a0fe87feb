"""The citizen mini-program backend at ``/citizen/v1`` (plain JSON; a patient-bound
bearer token). Errors are OperationOutcomes like everywhere else."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path, Request
from fastapi.concurrency import run_in_threadpool
from starlette.responses import Response

from ehr_service.api import openapi_docs as docs
from ehr_service.api.deps import Context
from ehr_service.api.fhir import in_read, in_write
from ehr_service.fhir import jsonio
from ehr_service.fhir.validation import parse_json
from ehr_service.interactions import citizen, citizen_sharing
from ehr_service.interactions.context import RequestContext
from ehr_service.interactions.results import Result

router = APIRouter(prefix="/citizen/v1", tags=["Citizen mini-program"])
ConsentId = Path(description="Consent id", pattern=r"^[A-Za-z0-9\-\.]{1,64}$")
Region = Path(description="region code", pattern=r"^[A-Za-z0-9]{1,64}$")


def _json(result: Result, ctx: RequestContext) -> Response:
    body: Any = result.body
    return Response(
        jsonio.dumps(body),
        status_code=result.status,
        media_type="application/json",
    )


@router.get("/me", **docs.citizen_route("my profile (ID number masked)", {200, 404}))
async def citizen_me(ctx: Context) -> Response:
    return _json(await run_in_threadpool(in_read, ctx, lambda c: citizen.me(c, ctx)), ctx)


@router.get(
    "/me/results",
    **docs.citizen_route("my laboratory and imaging results, newest first", {200}, paged=True),
)
async def citizen_results(ctx: Context) -> Response:
    return _json(await run_in_threadpool(in_read, ctx, lambda c: citizen.results(c, ctx)), ctx)


@router.get(
    "/me/access-log",
    **docs.citizen_route(
        "who accessed my record (when, organisation, data, purpose)", {200}, paged=True
    ),
)
async def citizen_access_log(ctx: Context) -> Response:
    return _json(await run_in_threadpool(in_read, ctx, lambda c: citizen.access_log(c, ctx)), ctx)


@router.get("/me/consents", **docs.citizen_route("my sharing refusals", {200}))
async def citizen_consents(ctx: Context) -> Response:
    return _json(await run_in_threadpool(in_read, ctx, lambda c: citizen.consents(c, ctx)), ctx)


@router.post(
    "/me/consents",
    **docs.citizen_route("refuse sharing with a region or an organisation", {201, 415}, body=True),
)
async def citizen_refuse(request: Request, ctx: Context) -> Response:
    body = parse_json(await request.body())
    result = await run_in_threadpool(in_write, ctx, lambda c: citizen.grant_refusal(c, ctx, body))
    return _json(result, ctx)


@router.delete("/me/consents/{consent_id}", **docs.citizen_route("revoke a refusal", {200, 404}))
async def citizen_revoke(ctx: Context, consent_id: str = ConsentId) -> Response:
    result = await run_in_threadpool(in_write, ctx, lambda c: citizen.revoke(c, ctx, consent_id))
    return _json(result, ctx)


@router.get(
    "/me/sharing-permits", **docs.citizen_route("my consents to cross-region sharing", {200})
)
async def citizen_permits(ctx: Context) -> Response:
    result = await run_in_threadpool(in_read, ctx, lambda c: citizen_sharing.list_permits(c, ctx))
    return _json(result, ctx)


@router.post(
    "/me/sharing-permits",
    **docs.citizen_route(
        "consent to sharing my results with a region (PIPL separate consent)",
        {200, 201, 415},
        body=True,
    ),
)
async def citizen_permit(request: Request, ctx: Context) -> Response:
    body = parse_json(await request.body())
    result = await run_in_threadpool(
        in_write, ctx, lambda c: citizen_sharing.grant_permit(c, ctx, body)
    )
    return _json(result, ctx)


@router.delete(
    "/me/sharing-permits/{region}",
    **docs.citizen_route("withdraw my consent to sharing with a region", {200, 404}),
)
async def citizen_withdraw_permit(ctx: Context, region: str = Region) -> Response:
    result = await run_in_threadpool(
        in_write, ctx, lambda c: citizen_sharing.withdraw_permit(c, ctx, region)
    )
    return _json(result, ctx)
