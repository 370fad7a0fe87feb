"""The regional operations dashboard: ``/dashboard`` (a static page), its assets and
the JSON it draws (``/dashboard/api/...``), all served by the service (no CDN: the
charts are plotly.js from the ``plotly`` wheel).

Authentication: the page and its assets hold no data and need no token. Its script
asks the operator for a bearer token (``ehr/operations`` or ``ehr/admin``), keeps it
in the tab's ``sessionStorage`` and sends it as ``Authorization: Bearer`` to the
JSON endpoints, which check it like every API call. No cookie is ever set, so no
request can be forged from another site (no CSRF), and the token never appears in
a URL or a log. A strict Content-Security-Policy (scripts from this origin only,
no inline script) keeps injected markup from running.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CollectorRegistry
from starlette.responses import FileResponse, Response

from ehr_service.api import openapi_docs as docs
from ehr_service.api.deps import Context
from ehr_service.api.fhir import in_read
from ehr_service.fhir import jsonio
from ehr_service.interactions import dashboard
from ehr_service.interactions.results import Result
from ehr_service.security.policy import require_operator

router = APIRouter(prefix="/dashboard", tags=["Operations dashboard"])
ASSETS = Path(__file__).with_name("dashboard_assets")
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
MEDIA = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


@cache
def plotly_js() -> Path:
    """plotly.min.js as the plotly wheel ships it (found without importing plotly)."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the plotly package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "package_data" / "plotly.min.js"


def _json(result: Result) -> Response:
    headers = {"Cache-Control": "no-store"}
    return Response(jsonio.dumps(result.body), result.status, headers, "application/json")


@router.get(
    "",
    summary="the operations dashboard (HTML; its data needs an operator token)",
    responses={200: {"description": "the page", "content": {"text/html": {}}}},
    openapi_extra={"security": []},
    response_class=Response,
)
async def dashboard_page() -> Response:
    return FileResponse(ASSETS / "index.html", media_type="text/html; charset=utf-8",
                        headers=PAGE_HEADERS)  # fmt: skip


@router.get("/assets/{name}", include_in_schema=False)
async def dashboard_asset(name: str) -> Response:
    if name == "plotly.min.js":
        path = plotly_js()
    elif name in ("dashboard.js", "dashboard.css"):
        path = ASSETS / name
    else:
        return Response("not found", status_code=404, media_type="text/plain")
    return FileResponse(path, media_type=MEDIA[path.suffix],
                        headers={"Cache-Control": "max-age=3600", **PAGE_HEADERS})  # fmt: skip


@router.get("/api/recognition", **docs.cds_route("dashboard: recognition figures", {200}))
async def dashboard_recognition(request: Request, ctx: Context) -> Response:
    """``$recognition-stats`` for the period (from, to: days, at most 92) by item,
    institution and region, with totals and the daily trend."""
    query = {k: request.query_params.getlist(k) for k in request.query_params}
    body = await run_in_threadpool(
        in_read, ctx, lambda c: Result(200, dashboard.recognition(c, ctx, query))
    )
    return _json(body)


def _samples(registry: CollectorRegistry) -> list[dashboard.Sample]:
    return [(s.name, dict(s.labels), float(s.value))
            for metric in registry.collect() for s in metric.samples]  # fmt: skip


@router.get("/api/operations", **docs.cds_route("dashboard: exchange, audit, traffic", {200}))
async def dashboard_operations(request: Request, ctx: Context) -> Response:
    """The /metrics figures (outbox by partner and state, audit chain, request and
    write counters) and the partners' key states."""
    require_operator(ctx.caller)

    def gather() -> Result:
        partners = [
            {"partner": p.partner_id, "name": p.name, "region": p.region,
             "keys": [{"kid": kid, "status": str(k.get("status") or "active")}
                      for kid, k in sorted(p.keys.items())]}
            for p in request.app.state.exchange.partners.list()
        ]  # fmt: skip
        samples = _samples(request.app.state.metrics.registry)
        return Result(200, dashboard.operations(samples, partners))

    return _json(await run_in_threadpool(gather))
