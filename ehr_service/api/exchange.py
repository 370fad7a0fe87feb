"""Signed cross-region exchange at ``/exchange/v1`` (docs/architecture.md §8): partners push
signed bundles here and pull a signed feed of results shared with them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from starlette.responses import Response

from ehr_service.api import openapi_docs as docs
from ehr_service.api.deps import Context
from ehr_service.api.negotiation import check_content_type
from ehr_service.exchange import suites
from ehr_service.exchange.outbound import BUNDLES_PATH, FEED_PATH
from ehr_service.exchange.service import Exchange
from ehr_service.fhir.primitives import parse_instant_param

router = APIRouter(tags=["Signed exchange"])
FHIR_JSON = "application/fhir+json"
_BODY_TYPES = frozenset({"application/fhir+json", "application/json"})


def exchange_of(request: Request) -> Exchange:
    exchange: Exchange = request.app.state.exchange
    return exchange


def service_root(request: Request) -> str:
    """The public root of this service (the base URL without ``/fhir``): signed
    messages name the URL they were sent to, as the sender addressed it."""
    configured: str | None = request.app.state.services.settings.base_url
    if configured:
        root = configured.rstrip("/")
        return root[: -len("/fhir")] if root.endswith("/fhir") else root
    return str(request.base_url).rstrip("/")


@router.post(BUNDLES_PATH, **docs.exchange_route("receive a signed bundle", {200, 409, 415, 422}))
async def exchange_receive(request: Request, ctx: Context) -> Response:
    """Verify the signature over the exact bytes, authorise the partner, ingest in one
    transaction; the answer is signed too (proof of receipt). A retry with the same
    jti and bytes returns the first answer."""
    check_content_type(request, _BODY_TYPES)
    body = await request.body()
    htu = service_root(request) + BUNDLES_PATH
    signatures = suites.from_headers(request.headers.get)
    reply = await run_in_threadpool(
        exchange_of(request).inbound.receive, ctx, body, signatures, htu
    )
    headers = suites.headers(reply.signature)
    return Response(reply.body, status_code=reply.status, media_type=FHIR_JSON, headers=headers)


@router.get(
    FEED_PATH,
    **docs.exchange_route("signed feed of results shared with a partner", {200}, feed=True),
)
async def exchange_feed(
    request: Request,
    ctx: Context,
    since: Annotated[str | None, Query(alias="_since")] = None,
    cursor: Annotated[int, Query(alias="_cursor", ge=0, le=2**63 - 1)] = 0,
    count: Annotated[int, Query(alias="_count", ge=1, le=1000)] = 100,
) -> Response:
    """What changed for the calling partner after ``_cursor`` (and not before
    ``_since``), oldest first; the ``next`` link carries the cursor to go on from."""
    moment: datetime | None = parse_instant_param(since, "_since") if since else None
    base = service_root(request) + FEED_PATH
    url = f"{base}?{request.url.query}" if request.url.query else base
    following = {"_count": str(count), **({"_since": since} if since else {})}
    next_query = "_cursor={cursor}&" + urlencode(following).replace("{", "{{").replace("}", "}}")
    exchange = exchange_of(request)

    def run() -> tuple[bytes, str]:
        body, signature, result = exchange.outbound.feed(
            ctx, after=cursor, since=moment, count=count, url=url,
            next_url=f"{base}?{next_query}",
        )  # fmt: skip
        ctx.services.auditor.record_now(ctx, result)
        return body, signature

    body, signature = await run_in_threadpool(run)
    return Response(body, media_type=FHIR_JSON, headers=suites.headers(signature))
