"""CDS Hooks 2.0 (``/cds-services``): discovery, the recognition services for
``order-select`` and ``order-sign`` and their feedback. HTTP only; the work is in
``interactions/cds_hooks.py`` and ``interactions/cds_feedback.py``.

Discovery needs no token; the services and feedback take the CDS client's bearer
token (verified as on the FHIR API). Errors are OperationOutcomes (400, 401, 403,
404, 409, 412, 415, 422).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.concurrency import run_in_threadpool
from starlette.responses import Response

from ehr_service.api import openapi_docs as docs
from ehr_service.api.deps import Context
from ehr_service.api.fhir import in_write, json_body
from ehr_service.fhir import jsonio
from ehr_service.interactions import cds_feedback, cds_hooks
from ehr_service.interactions.cds_cards import language_of
from ehr_service.interactions.results import Result

router = APIRouter(prefix="/cds-services", tags=["CDS Hooks"])
ServiceId = Annotated[
    str, Path(description="a CDS service id (GET /cds-services)", pattern=r"^[A-Za-z0-9\-]{1,64}$")
]
JSON = frozenset({"application/json", "application/fhir+json"})


def _json(result: Result) -> Response:
    return Response(jsonio.dumps(result.body), status_code=result.status,
                    media_type="application/json")  # fmt: skip


@router.get("", **docs.plain_route("CDS Hooks discovery"))
async def cds_discovery() -> Response:
    """The CDS services of this service (CDS Hooks 2.0 §Discovery)."""
    return Response(jsonio.dumps(cds_hooks.discovery()), media_type="application/json")


@router.post(
    "/{service_id}",
    **docs.cds_route("call a CDS service", {200, 404, 412, 422}, body="a CDS Hooks request"),
)
async def cds_service_call(service_id: ServiceId, request: Request, ctx: Context) -> Response:
    """Cards for the draft orders of ``context.draftOrders`` that have a recognisable
    prior result (prefetch ``patient``, or fhirServer + fhirAuthorization)."""
    body = await json_body(request, JSON)
    call = cds_hooks.parse_call(
        service_id, body, language_of(request.headers.get("accept-language"))
    )
    url = cds_hooks.fetch_source(call, ctx)
    if url is not None:  # outside the transaction: the client's server may be slow
        patient = await run_in_threadpool(cds_hooks.fetch_patient, ctx, call, url)
        call = replace(call, patient=patient, prefetched=True)
    result = await run_in_threadpool(in_write, ctx, lambda c: cds_hooks.advise(c, ctx, call))
    return _json(result)


@router.post(
    "/{service_id}/feedback",
    **docs.cds_route("feedback on a card", {200, 404, 409, 422}, body="CDS Hooks feedback"),
)
async def cds_service_feedback(service_id: ServiceId, request: Request, ctx: Context) -> Response:
    """What the doctor did with a card: accepted (a suggestion) or overridden (with an
    override reason); recorded as a recognition decision."""
    body = await json_body(request, JSON)
    result = await run_in_threadpool(
        in_write, ctx, lambda c: cds_feedback.feedback(c, ctx, service_id, body)
    )
    return _json(result)
