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
    # What is true of this deployment only: Backend Services (client credentials
    # with a signed assertion) when a token endpoint is configured, standalone
    # patient launch only when an authorize endpoint is too.
    launch = settings.authorization_endpoint is not None
    capabilities = ["permission-patient", "permission-user", "permission-v1", "permission-v2"]
    if settings.token_endpoint:
        capabilities.insert(0, "client-confidential-asymmetric")
    if launch:
        capabilities[:0] = ["launch-standalone", "context-standalone-patient"]
    grants = (["client_credentials"] if settings.token_endpoint else []) + (
        ["authorization_code"] if launch else []
    )
    configuration: dict[str, Any] = {
        "issuer": issuers[0] if issuers else None,
        "jwks_uri": settings.jwks_url,
        "authorization_endpoint": settings.authorization_endpoint,
        "token_endpoint": settings.token_endpoint,
        "grant_types_supported": grants or None,
        "token_endpoint_auth_methods_supported": ["private_key_jwt"] if grants else None,
        # SMART Backend Services: servers support RS384 and ES384 client assertions.
        "token_endpoint_auth_signing_alg_values_supported": (
            ["ES384", "RS384", "ES256", "RS256"] if settings.token_endpoint else None
        ),
        "scopes_supported": SCOPES_SUPPORTED,
        "capabilities": capabilities,
        "code_challenge_methods_supported": ["S256"] if launch else None,
        "response_types_supported": ["code"] if launch else None,
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
