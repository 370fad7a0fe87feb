"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) served whole by the service: their
scripts, styles and icon come from the ``fastapi-offline`` package's asset bundle,
mounted at ``/docs/assets``, so the pages work on a closed network (FastAPI's own
pages load them from a CDN, and ReDoc's fonts from Google). Every URL a page
names is on the service's own origin."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse

ASSETS_URL = "/docs/assets"
ASSETS_DIR = Path(fastapi_offline.__file__).parent / "static"
OPENAPI_URL = "/openapi.json"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"
TITLE = "ehr-service"

router = APIRouter(include_in_schema=False)


def _root(request: Request) -> str:
    """The path prefix the service is mounted under (a reverse proxy's root_path)."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def _page_urls(request: Request) -> tuple[str, Callable[[str], str]]:
    """A page's OpenAPI document URL and its assets' URLs, under the mount prefix."""
    root = _root(request)
    return root + OPENAPI_URL, lambda name: f"{root}{ASSETS_URL}/{name}"


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    openapi_url, asset = _page_urls(request)
    return get_swagger_ui_html(
        openapi_url=openapi_url,
        title=f"{TITLE} - Swagger UI",
        swagger_js_url=asset("swagger-ui-bundle.js"),
        swagger_css_url=asset("swagger-ui.css"),
        swagger_favicon_url=asset("favicon.png"),
        oauth2_redirect_url=_root(request) + OAUTH2_REDIRECT_URL,
        # no badge from the public validator service: the page calls nothing outside
        swagger_ui_parameters={"validatorUrl": None},
    )


@router.get(OAUTH2_REDIRECT_URL)
async def swagger_ui_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    openapi_url, asset = _page_urls(request)
    return get_redoc_html(
        openapi_url=openapi_url,
        title=f"{TITLE} - ReDoc",
        redoc_js_url=asset("redoc.standalone.js"),
        redoc_favicon_url=asset("favicon.png"),
        with_google_fonts=False,
    )


def install(app: FastAPI) -> None:
    """The pages and their assets; the app is made with ``docs_url=None, redoc_url=None``."""
    app.router.routes.extend(router.routes)
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS_DIR), name="docs-assets")
