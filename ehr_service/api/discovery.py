"""Unauthenticated discovery: SMART App Launch configuration (``.well-known``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ehr_service.api import openapi_docs as docs
from ehr_service.exchange.keys import SigningKeys
from ehr_service.interactions.context import Services
from ehr_service.security import smart

router = APIRouter(tags=["Discovery"])


def smart_configuration(request: Request) -> dict[str, Any]:
    services: Services = request.app.state.services
    return smart.smart_configuration(services.settings)


@router.get("/.well-known/jwks.json", **docs.plain_route("exchange signing keys (JWKS)"))
async def jwks(request: Request) -> JSONResponse:
    """Public keys of this region's exchange signatures: active, pending and retired
    (old messages must verify years later); never revoked ones."""
    services: Services = request.app.state.services
    keys = SigningKeys(services.settings.signing_keys_dir)
    return JSONResponse(keys.jwks(), headers={"Cache-Control": "max-age=300"})


@router.get("/.well-known/smart-configuration", **docs.plain_route("SMART configuration"))
async def well_known(request: Request) -> JSONResponse:
    return JSONResponse(smart_configuration(request))


@router.get("/fhir/.well-known/smart-configuration", **docs.plain_route("SMART configuration"))
async def fhir_well_known(request: Request) -> JSONResponse:
    return JSONResponse(smart_configuration(request))
