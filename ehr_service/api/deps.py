"""Request-scoped dependencies: the caller (the one place identity is resolved),
the FHIR request context and the response rendering."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ehr_service.api.middleware import request_id_of
from ehr_service.api.negotiation import Rendering, negotiate, return_preference
from ehr_service.interactions.context import RequestContext, Services
from ehr_service.security.caller import ANONYMOUS, Caller


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def get_caller(request: Request) -> Caller:
    """Resolve who is calling. Bearer tokens are verified here once they are required."""
    return ANONYMOUS


def get_rendering(request: Request) -> Rendering:
    rendering = negotiate(request)
    request.state.rendering = rendering
    return rendering


def base_url_of(request: Request, services: Services) -> str:
    configured = services.settings.base_url
    if configured:
        return configured.rstrip("/")
    return str(request.base_url).rstrip("/") + "/fhir"


def get_context(
    request: Request,
    services: Annotated[Services, Depends(get_services)],
    caller: Annotated[Caller, Depends(get_caller)],
    _rendering: Annotated[Rendering, Depends(get_rendering)],
) -> RequestContext:
    query: dict[str, list[str]] = {}
    for key, value in request.query_params.multi_items():
        query.setdefault(key, []).append(value)
    return RequestContext(
        services=services,
        base_url=base_url_of(request, services),
        request_id=request_id_of(request.scope),
        caller=caller,
        prefer_return=return_preference(request),
        query=query,
    )


Context = Annotated[RequestContext, Depends(get_context)]
RenderingDep = Annotated[Rendering, Depends(get_rendering)]
