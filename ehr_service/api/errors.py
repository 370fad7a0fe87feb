"""Exception handlers: every failure leaves as an OperationOutcome."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ehr_service.api.middleware import REQUEST_ID_HEADER, ResponseTracker, request_id_of
from ehr_service.api.negotiation import DEFAULT_RENDERING, Rendering, negotiate
from ehr_service.api.rendering import render_error
from ehr_service.fhir.errors import Category, FhirError, Issue, unexpected
from ehr_service.interactions.context import Services

logger = logging.getLogger("ehr_service.api")

_HTTP_CATEGORIES = {
    400: Category.INCORRECT,
    404: Category.NOT_FOUND,
    405: Category.METHOD_NOT_ALLOWED,
    406: Category.NOT_ACCEPTABLE,
    413: Category.TOO_LARGE,
    415: Category.UNSUPPORTED_MEDIA_TYPE,
}


def _rendering(request: Request) -> Rendering:
    """The request's negotiated rendering; for a failure before negotiation (a bad
    token, an unknown route) the one the request asks for, if it is servable."""
    rendering = getattr(request.state, "rendering", None)
    if isinstance(rendering, Rendering):
        return rendering
    try:
        return negotiate(request)
    except FhirError:
        return DEFAULT_RENDERING


def audit_failure(request: Request, status: int, patients: frozenset[str] = frozenset()) -> None:
    """Refusals and failures of authenticated requests are audited too (their own
    transaction: whatever the request wrote was rolled back)."""
    caller = getattr(request.state, "caller", None)
    if caller is None or status in {401, 429, 503}:  # 401: audited as a login failure
        return
    services: Services = request.app.state.services
    try:
        services.auditor.append_now(
            services.auditor.new_event(
                interaction=getattr(request.scope.get("route"), "name", ""),
                status=status,
                caller=caller,
                patients=patients,
                what=request.url.path.removeprefix("/fhir/")[:200],
                query=request.url.query or None,
            )
        )
    except FhirError:
        logger.error("request %s: its failure could not be audited", request_id_of(request.scope))


async def on_fhir_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, FhirError)
    if exc.category is Category.FAULT:
        logger.error("request %s failed: %s", request_id_of(request.scope), exc)
    await run_in_threadpool(audit_failure, request, exc.status, exc.patients)
    if exc.status == 503:  # the database (or a dependency) is down: when to come back
        services: Services = request.app.state.services
        exc.headers.setdefault("Retry-After", str(services.settings.retry_after_s))
    return render_error(exc, _rendering(request))


async def on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    issues = []
    for error in exc.errors()[:50]:
        location = ".".join(str(p) for p in error.get("loc", ()))
        issues.append(
            Issue(f"{location}: {error.get('msg', 'invalid')}", "invalid", expression=(location,))
        )
    return render_error(FhirError(Category.INCORRECT, tuple(issues)), _rendering(request))


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    category = _HTTP_CATEGORIES.get(exc.status_code, Category.INCORRECT)
    if exc.status_code == 404:
        message = f"No FHIR endpoint at {request.url.path[:200]}"
    elif exc.status_code == 405:
        message = f"{request.method} is not supported at {request.url.path[:200]}"
    else:
        message = str(exc.detail)
    error = FhirError.of(category, message)
    error.headers.update(exc.headers or {})
    if exc.status_code == 405:
        error.headers["Allow"] = ", ".join(allowed_methods(request))
    return render_error(error, _rendering(request))


def allowed_methods(request: Request) -> list[str]:
    """The methods of the resource at this path: those of the most specific routes
    matching it (fewest path parameters: ``/fhir/metadata`` is not also
    ``/fhir/{type}``), every route of that rank together."""
    matching = [
        route
        for route in request.app.routes
        if isinstance(route, APIRoute) and route.path_regex.match(request.url.path)
    ]
    if not matching:
        return []
    rank = min(len(route.param_convertors) for route in matching)
    methods: set[str] = set()
    for route in matching:
        if len(route.param_convertors) == rank:
            methods |= route.methods or set()
    if "GET" in methods:
        methods.add("HEAD")  # answered as GET, headers only (middleware.HeadAsGetMiddleware)
    return sorted(methods)


def method_not_allowed(request: Request) -> FhirError:
    """A 405 for the request's method at its path, with the ``Allow`` of that path."""
    return FhirError(
        Category.METHOD_NOT_ALLOWED,
        (Issue(f"{request.method} is not supported at {request.url.path[:200]}"),),
        headers={"Allow": ", ".join(allowed_methods(request))},
    )


async def on_unexpected(request: Request, exc: Exception) -> Response:
    if isinstance(exc, ClientDisconnect):
        raise exc  # answered (not) by UnexpectedErrors
    request_id = request_id_of(request.scope)
    logger.exception("unexpected error in request %s", request_id, exc_info=exc)
    error = unexpected(request_id)
    await run_in_threadpool(audit_failure, request, 500)
    response = render_error(error)
    response.headers[REQUEST_ID_HEADER] = request_id
    return response


class UnexpectedErrors:
    """Answer an unhandled error here, below Starlette's ServerErrorMiddleware: that
    one re-raises after answering, and the server then drops the keep-alive
    connection, so the client's next request on it went unanswered."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        tracked = ResponseTracker(send)
        try:
            await self.app(scope, receive, tracked)
        except ClientDisconnect:  # the client left mid-body: nobody to answer, no fault
            logger.info("request %s: the client disconnected", request_id_of(scope))
        except Exception as exc:
            if tracked.started:  # a streamed body broke off: nothing more can be said on it
                raise
            response = await on_unexpected(Request(scope, receive), exc)
            await response(scope, receive, send)


def install(app: FastAPI) -> None:
    app.add_exception_handler(FhirError, on_fhir_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
