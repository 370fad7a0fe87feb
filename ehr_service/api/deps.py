"""Request-scoped dependencies: the caller (the one place identity is resolved),
the FHIR request context and the response rendering.

They are ``async``: FastAPI runs a plain ``def`` dependency on the thread pool,
one hop each. Here nothing blocks: a token seen before is a dictionary lookup,
a new one is verified in place unless that may wait on a remote JWKS (then, and
for the audit of a failed login, the work goes to the thread pool). A request
then makes one hop, for its unit of work."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import unquote_to_bytes

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool

from ehr_service.api.middleware import request_id_of
from ehr_service.api.negotiation import Rendering, negotiate, return_preference
from ehr_service.fhir.errors import Category, FhirError
from ehr_service.interactions.context import RequestContext, Services
from ehr_service.security.caller import ANONYMOUS, Caller
from ehr_service.security.tokens import InvalidToken, missing_token


async def get_caller(request: Request) -> Caller:
    """Resolve who is calling, once per request: the verified bearer token, or anonymous
    (which only discovery endpoints accept). A token that fails is a 401 here."""
    header = request.headers.get("authorization")
    if header is None:
        return ANONYMOUS
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise InvalidToken.because("the Authorization header must be 'Bearer <token>'")
    services: Services = request.app.state.services
    verifier = services.tokens
    caller = verifier.cached(token)
    if caller is None:
        try:
            if verifier.may_fetch:
                caller = await run_in_threadpool(verifier.verify, token)
            else:
                caller = verifier.verify(token)
        except FhirError as error:  # a login failure: audited (at a bounded rate), answered
            client = request.client.host if request.client else "unknown"
            services.rate_limiter.take(f"login-failure:{client}")  # floods get 429, unaudited
            event = services.auditor.new_event(
                interaction="login",
                status=error.status,
                caller=ANONYMOUS,
                patients=frozenset(),
                login=True,
            )
            await run_in_threadpool(services.auditor.append_now, event)
            raise
    request.state.caller = caller
    return caller


async def get_rendering(request: Request) -> Rendering:
    """The negotiated rendering (made once, with the context)."""
    rendering: Rendering | None = getattr(request.state, "rendering", None)
    if rendering is None:
        rendering = negotiate(request)
        request.state.rendering = rendering
    return rendering


def base_url_of(request: Request, services: Services) -> str:
    configured = services.settings.base_url
    if configured:
        return configured.rstrip("/")
    return str(request.base_url).rstrip("/") + "/fhir"


def _check_utf8(raw: bytes) -> None:
    """Search values are UTF-8 text (RFC 3986 §2.5): bytes that are not (a GBK name,
    percent-encoded or sent raw) are refused, not searched for as U+FFFD."""
    if b"%" not in raw and raw.isascii():
        return
    try:
        unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise FhirError.of(
            Category.INCORRECT,
            "The query string is not UTF-8 once percent-decoded: send search values "
            "as UTF-8, percent-encoded (RFC 3986)",
            code="value",
        ) from None


def _context(request: Request, caller: Caller) -> RequestContext:
    services: Services = request.app.state.services
    request.state.rendering = negotiate(request)  # the error handler renders with it too
    _check_utf8(request.scope.get("query_string", b""))
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
        interaction=getattr(request.scope.get("route"), "name", ""),
        query_string=request.url.query,
        path=request.url.path,
    )


# One dependency each (FastAPI's dependency solving is a sixth of a read's CPU: the
# context is built here directly, not from a tree of small dependencies).
async def get_context(
    request: Request, caller: Annotated[Caller, Depends(get_caller)]
) -> RequestContext:
    return _context(request, caller)


async def get_authenticated_context(
    request: Request, caller: Annotated[Caller, Depends(get_caller)]
) -> RequestContext:
    """The context of an endpoint that needs a token: 401 before anything else
    (the body is not even read)."""
    ctx = _context(request, caller)
    if not caller.authenticated:
        raise missing_token()
    ctx.services.rate_limiter.take(caller.client_id or caller.subject)
    if not request.url.path.startswith("/exchange/") and await _is_partner(request, caller):
        # A partner region's token is for signed exchange only: its writes must come
        # signed, with Provenance, under the resident's consent to its region.
        raise FhirError.of(
            Category.FORBIDDEN,
            "A partner region's token is for /exchange only",
            code="forbidden",
        )
    return ctx


async def _is_partner(request: Request, caller: Caller) -> bool:
    exchange = getattr(request.app.state, "exchange", None)
    if exchange is None or caller.kind != "system":
        return False
    client = caller.client_id or caller.subject
    known = exchange.partners.is_partner_cached(client)
    if known is None:  # the partner list is read again every few seconds
        known = await run_in_threadpool(exchange.partners.is_partner, client)
    return bool(known)


PublicContext = Annotated[RequestContext, Depends(get_context)]
Context = Annotated[RequestContext, Depends(get_authenticated_context)]
RenderingDep = Annotated[Rendering, Depends(get_rendering)]
