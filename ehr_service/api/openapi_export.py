"""The OpenAPI document as committed in ``openapi/openapi.json`` (stable bytes)."""

from __future__ import annotations

import orjson
from fastapi import FastAPI

from ehr_service.fhir import jsonio


def openapi_bytes(app: FastAPI) -> bytes:
    return jsonio.dumps(app.openapi(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
