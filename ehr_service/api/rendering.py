"""Turn interaction results and errors into HTTP responses.

Stored resources are sent as the bytes stored; only ``_pretty=true`` reparses
them to indent.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from ehr_service.api.negotiation import DEFAULT_RENDERING, Rendering
from ehr_service.fhir.errors import FhirError, error_outcome
from ehr_service.interactions.results import Result


def _encode(body: bytes | dict[str, Any], pretty: bool) -> bytes:
    if pretty:
        parsed = orjson.loads(body) if isinstance(body, bytes) else orjson.loads(orjson.dumps(body))
        return orjson.dumps(parsed, option=orjson.OPT_INDENT_2)
    return body if isinstance(body, bytes) else orjson.dumps(body)


def fhir_response(
    status: int,
    body: bytes | dict[str, Any] | None,
    rendering: Rendering = DEFAULT_RENDERING,
    headers: dict[str, str] | None = None,
) -> Response:
    if body is None or status in {204, 304}:
        return Response(status_code=status, headers=headers)
    return Response(
        _encode(body, rendering.pretty),
        status_code=status,
        headers=headers,
        media_type=f"{rendering.media_type}; charset=utf-8",
    )


def render_result(result: Result, base_url: str, rendering: Rendering) -> Response:
    return fhir_response(result.status, result.body, rendering, result.headers(base_url))


def render_error(error: FhirError, rendering: Rendering = DEFAULT_RENDERING) -> Response:
    return fhir_response(error.status, error_outcome(error), rendering, dict(error.headers))
