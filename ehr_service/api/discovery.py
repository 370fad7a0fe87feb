"""Unauthenticated discovery: SMART App Launch configuration (``.well-known``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ehr_service.api import openapi_docs as docs
from ehr_service.exchange.keys import SigningKeys
from ehr_service.interactions.context import Services

router = APIRouter(tags=["Discovery"])

SCOPES_SUPPORTED = [
    "system/*.cruds",
    "user/*.cruds",
    "patient/*.rs",
    "patient/*.read",
    "user/*.read",
    "system/*.read",
    "ehr/admin",
    "ehr/audit",
]


def smart_configuration(request: Request) -> dict[str, Any]:
    services: Services = request.app.state.services
    settings = services.settings
    issuers = list(settings.token_issuers)
    if settings.trusts_own_tokens:
        issuers.append(settings.own_token_issuer)
    configuration: dict[str, Any] = {
        "issuer": issuers[0] if issuers else None,
        "jwks_uri": settings.jwks_url,
        "token_endpoint": settings.token_endpoint,
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["ES256", "RS256"],
        "scopes_supported": SCOPES_SUPPORTED,
        "capabilities": [
            "client-confidential-asymmetric",
            "context-standalone-patient",
            "permission-patient",
            "permission-user",
            "permission-v1",
            "permission-v2",
        ],
        "code_challenge_methods_supported": ["S256"],
    }
    return {k: v for k, v in configuration.items() if v is not None}


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
