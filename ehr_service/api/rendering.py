"""Turn interaction results and errors into HTTP responses.

Stored resources are sent as the bytes stored; only ``_pretty=true`` reparses
them to indent, and XML (``application/fhir+xml``) is converted from them
(``ehr_service.fhir.xml``, lexical forms kept).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from starlette.responses import Response

from ehr_service.api.negotiation import DEFAULT_RENDERING, FHIR_JSON, Rendering
from ehr_service.fhir import jsonio, xml
from ehr_service.fhir.errors import FhirError, error_outcome
from ehr_service.interactions.context import RequestContext
from ehr_service.interactions.results import Result

Present = Callable[[bytes], bytes]


def _encode(
    body: bytes | dict[str, Any], rendering: Rendering, present: Present | None
) -> tuple[bytes, str]:
    """The response bytes and their media type."""
    encoded = body if isinstance(body, bytes) else jsonio.dumps(body)
    if present is not None:
        encoded = present(encoded)
    if rendering.xml:
        try:
            return xml.json_to_xml(encoded, pretty=rendering.pretty), rendering.media_type
        except xml.NotAResource:  # a Bulk Data manifest, say: JSON is its only form
            return _json(encoded, rendering.pretty), FHIR_JSON
    return _json(encoded, rendering.pretty), rendering.media_type


def _json(encoded: bytes, pretty: bool) -> bytes:
    if pretty:
        return jsonio.dumps(jsonio.loads(encoded), option=orjson.OPT_INDENT_2)
    return encoded


def fhir_response(
    status: int,
    body: bytes | dict[str, Any] | None,
    rendering: Rendering = DEFAULT_RENDERING,
    headers: dict[str, str] | None = None,
    present: Present | None = None,
) -> Response:
    if body is None or status in {204, 304}:
        return Response(status_code=status, headers=headers)
    content, media_type = _encode(body, rendering, present)
    return Response(
        content, status_code=status, headers=headers, media_type=f"{media_type}; charset=utf-8"
    )


def presenter(ctx: RequestContext) -> Present:
    """How this caller sees resident ID numbers: unsealed, or masked only."""
    protection = ctx.services.identity.protection
    reveal = ctx.caller.sees_id_numbers
    return lambda body: protection.present(body, reveal=reveal)


def render_result(result: Result, ctx: RequestContext, rendering: Rendering) -> Response:
    """Every FHIR response with resources passes here, so ID numbers are shown (or
    not) by one rule whatever the path (read, search, history, bundles, operations)."""
    return fhir_response(
        result.status, result.body, rendering, result.headers(ctx.base_url), presenter(ctx)
    )


def render_error(error: FhirError, rendering: Rendering = DEFAULT_RENDERING) -> Response:
    return fhir_response(error.status, error_outcome(error), rendering, dict(error.headers))
