"""OpenAPI descriptions of the FHIR endpoints (kept beside the routes so the
exported ``openapi/openapi.json`` documents every status a route can answer)."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from ehr_service.fhir.resource_types import R4_RESOURCE_TYPES

FHIR_JSON = "application/fhir+json"
FHIR_XML = "application/fhir+xml"
_XML_SCHEMA: dict[str, Any] = {"type": "string", "description": "FHIR XML (R4 §2.6.1)"}
TYPE_PARAM: dict[str, Any] = {"json_schema_extra": {"enum": sorted(R4_RESOURCE_TYPES)}}
ID_PARAM: dict[str, Any] = {"json_schema_extra": {"pattern": "^[A-Za-z0-9\\-.]{1,64}$"}}
ETAG_PARAM: dict[str, Any] = {"json_schema_extra": {"pattern": '^(W/)?"[0-9]{1,18}"$'}}

_RESOURCE_SCHEMA = {
    "type": "object",
    "required": ["resourceType"],
    "properties": {"resourceType": {"type": "string"}},
    "additionalProperties": True,
}
_BUNDLE_SCHEMA = {
    "type": "object",
    "required": ["resourceType", "type"],
    "properties": {
        "resourceType": {"type": "string", "enum": ["Bundle"]},
        "type": {"type": "string", "enum": ["batch", "transaction"]},
        "entry": {"type": "array", "items": {"type": "object"}},
    },
}
_PATCH_SCHEMA = {
    "type": "array",
    "minItems": 1,
    "items": {
        "type": "object",
        "required": ["op", "path"],
        "properties": {
            "op": {"type": "string", "enum": ["add", "remove", "replace", "move", "copy", "test"]},
            "path": {"type": "string"},
            "from": {"type": "string"},
            "value": {},
        },
    },
}
_BODIES = {
    "resource": {FHIR_JSON: {"schema": _RESOURCE_SCHEMA}, FHIR_XML: {"schema": _XML_SCHEMA}},
    "Bundle": {FHIR_JSON: {"schema": _BUNDLE_SCHEMA}, FHIR_XML: {"schema": _XML_SCHEMA}},
    "patch": {
        "application/json-patch+json": {"schema": _PATCH_SCHEMA},
        "application/merge-patch+json": {"schema": {"type": "object"}},
        FHIR_JSON: {"schema": _RESOURCE_SCHEMA},  # FHIRPath Patch: a Parameters
        FHIR_XML: {"schema": _XML_SCHEMA},
    },
    "form": {
        "application/x-www-form-urlencoded": {
            "schema": {"type": "object", "additionalProperties": True}
        }
    },
}
_DESCRIPTIONS = {
    200: "OK",
    201: "Created",
    204: "No Content",
    304: "Not Modified (If-None-Match)",
    400: "Bad request or invalid resource (OperationOutcome)",
    404: "Unknown resource type or resource (OperationOutcome)",
    405: "Not allowed here, e.g. a write of the read-only AuditEvent (OperationOutcome, Allow)",
    406: "Accept or _format excludes FHIR JSON and XML (OperationOutcome)",
    401: "Missing or invalid bearer token (OperationOutcome, WWW-Authenticate)",
    403: "The token's scopes or compartment do not allow it (OperationOutcome)",
    409: "Concurrent modification, or a resident who already has a record (OperationOutcome)",
    410: "Deleted (OperationOutcome)",
    412: "If-Match does not match the current version (OperationOutcome)",
    413: "Body or bundle too large (OperationOutcome)",
    415: "Body is neither FHIR JSON nor FHIR XML (OperationOutcome)",
    422: "Unprocessable, e.g. a patch that cannot apply (OperationOutcome)",
    429: "Too many requests (OperationOutcome, Retry-After)",
    500: "Unexpected error (OperationOutcome)",
    501: "Not implemented yet (OperationOutcome)",
    503: "Database unavailable (OperationOutcome)",
}
# 405: a read-only type (AuditEvent) or a reserved path; 429: every client is rate limited
_ALWAYS = {400, 401, 403, 405, 406, 429, 500, 503}
_NO_BODY = {204, 304}

_COMMON_PARAMS: list[dict[str, Any]] = [
    {
        "name": "_format",
        "in": "query",
        "required": False,
        "schema": {
            "type": "string",
            "enum": [
                "json",
                "application/fhir+json",
                "application/json",
                "application/json+fhir",
                "xml",
                FHIR_XML,
                "application/xml",
                "text/xml",
            ],
        },
    },
    {
        "name": "_pretty",
        "in": "query",
        "required": False,
        "schema": {"type": "string", "enum": ["true", "false"]},
    },
]
_PREFER = {
    "name": "Prefer",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "return=minimal | representation | OperationOutcome",
}
_HISTORY_PARAMS: list[dict[str, Any]] = [
    {
        "name": "_since",
        "in": "query",
        "required": False,
        "schema": {"type": "string", "format": "date-time"},
    },
    {
        "name": "_count",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 0},
    },
    {
        "name": "_cursor",
        "in": "query",
        "required": False,
        "schema": {"type": "string", "pattern": "^[ab][0-9]{1,19}$"},
        "description": "opaque paging cursor from a next/previous link",
    },
]


_SEARCH_PARAMS: list[dict[str, Any]] = [
    {
        "name": "_count",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 0},
    },
    {"name": "_sort", "in": "query", "required": False, "schema": {"type": "string"}},
    {
        "name": "_total",
        "in": "query",
        "required": False,
        "schema": {"type": "string", "enum": ["none", "estimate", "accurate"]},
    },
    {
        "name": "_summary",
        "in": "query",
        "required": False,
        "schema": {"type": "string", "enum": ["true", "false", "text", "data", "count"]},
    },
    {"name": "_elements", "in": "query", "required": False, "schema": {"type": "string"}},
    {"name": "_include", "in": "query", "required": False, "schema": {"type": "string"}},
    {"name": "_revinclude", "in": "query", "required": False, "schema": {"type": "string"}},
    {
        "name": "Prefer",
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": "handling=strict | handling=lenient",
    },
]

# GET /fhir/OperationDefinition (interactions/operation_definitions.py): its own few.
_DEFINITION_PARAMS: list[dict[str, Any]] = [
    {"name": name, "in": "query", "required": False, "schema": {"type": "string"}}
    for name in ("_id", "url", "name", "name:exact", "code")
]


def plain_route(summary: str) -> dict[str, Any]:
    """A JSON endpoint outside FHIR (discovery): no token needed."""
    return {
        "summary": summary,
        "responses": {200: {"description": "OK", "content": {"application/json": {}}}},
        "openapi_extra": {"security": []},
    }


def cds_route(summary: str, statuses: set[int], *, body: str | None = None) -> dict[str, Any]:
    """A CDS Hooks 2.0 endpoint: JSON in and out, OperationOutcome errors."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status in sorted(statuses | {400, 401, 403, 415, 429, 500, 503}):
        media = "application/json" if status < 400 else FHIR_JSON
        description = "CDS Hooks: the data the service needs could not be obtained" if (
            status == 412) else _DESCRIPTIONS.get(status, "OK")  # fmt: skip
        responses[status] = {
            "description": description,
            "content": {media: {"schema": {"type": "object"}}},
        }
    extra: dict[str, Any] = {}
    if body is not None:
        extra["requestBody"] = {
            "required": True,
            "description": body,
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    return {
        "summary": summary,
        "responses": responses,
        "openapi_extra": extra,
        "response_class": Response,
    }


def citizen_route(
    summary: str, statuses: set[int], *, paged: bool = False, body: bool = False
) -> dict[str, Any]:
    """A JSON endpoint of the citizen API (patient-bound token)."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status in sorted(statuses | {400, 401, 403, 429, 500, 503}):
        media = "application/json" if status < 400 else FHIR_JSON
        responses[status] = {
            "description": _DESCRIPTIONS.get(status, "OK"),
            "content": {media: {"schema": {"type": "object"}}},
        }
    parameters: list[dict[str, Any]] = []
    if paged:
        parameters = [
            {"name": "limit", "in": "query", "required": False,
             "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
            {"name": "before", "in": "query", "required": False, "schema": {"type": "string"}},
        ]  # fmt: skip
    extra: dict[str, Any] = {"parameters": parameters}
    if body:
        extra["requestBody"] = {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["refuse"],
                        "properties": {
                            "refuse": {
                                "type": "object",
                                "properties": {
                                    "region": {"type": "string"},
                                    "organization": {"type": "string"},
                                },
                            }
                        },
                    }
                }
            },
        }
    return {
        "summary": summary,
        "responses": responses,
        "openapi_extra": extra,
        "response_class": Response,
    }


_SIGNATURE_HEADER = {
    "X-Exchange-Signature": {
        "description": "detached JWS (RFC 7797, b64:false) over the exact body bytes",
        "schema": {"type": "string"},
    }
}


def exchange_route(summary: str, statuses: set[int], *, feed: bool = False) -> dict[str, Any]:
    """A signed exchange endpoint (docs/architecture.md §8): FHIR JSON both ways, signed."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status in sorted(statuses | {400, 401, 403, 429, 500, 503}):
        response: dict[str, Any] = {
            "description": _DESCRIPTIONS.get(status, "OK"),
            "content": {FHIR_JSON: {"schema": {"type": "object"}}},
        }
        if status == 200:
            response["headers"] = _SIGNATURE_HEADER
        responses[status] = response
    parameters: list[dict[str, Any]] = []
    extra: dict[str, Any] = {"parameters": parameters}
    if not feed:  # the feed's _since, _cursor and _count come from its signature
        parameters.append(
            {
                "name": "X-Exchange-Signature",
                "in": "header",
                "required": True,
                "schema": {"type": "string"},
                "description": "detached JWS (RFC 7797, b64:false) over the exact body bytes",
            }
        )
        extra["requestBody"] = {
            "required": True,
            "content": {FHIR_JSON: {"schema": {"type": "object"}}},
        }
    return {
        "summary": summary,
        "responses": responses,
        "openapi_extra": extra,
        "response_class": Response,
    }


def export_route(
    summary: str,
    *,
    kickoff: bool = False,
    cancel: bool = False,
    file: bool = False,
    post: bool = False,
    instance: bool = False,
) -> dict[str, Any]:
    """A Bulk Data endpoint: kick-off (202 + Content-Location) by GET or by POST of a
    Parameters body, status, cancel, file; on an ``instance`` (a Group), 410 deleted."""
    outcome: dict[str, Any] = {"content": {FHIR_JSON: {"schema": {"type": "object"}}}}
    if post:  # a FHIR XML body gets its errors in XML
        outcome["content"][FHIR_XML] = {"schema": _XML_SCHEMA}
    statuses = (400, 401, 403, 404, 429, 500, 503) + ((413, 415) if post else ())
    statuses += (410,) if instance else ()
    responses: dict[int | str, dict[str, Any]] = {
        status: {"description": _DESCRIPTIONS.get(status, "error"), **outcome}
        for status in statuses
    }
    parameters: list[dict[str, Any]] = []
    extra: dict[str, Any] = {}
    if post:
        extra["requestBody"] = {"required": True, "content": _BODIES["resource"]}
    if kickoff:
        responses[202] = {
            "description": "Accepted: poll the status URL",
            "headers": {"Content-Location": {"schema": {"type": "string"}}},
        }
        parameters = [
            {"name": "Prefer", "in": "header", "required": True, "schema": {"type": "string"},
             "description": "respond-async"},
            {"name": "_type", "in": "query", "required": False, "schema": {"type": "string"}},
            {"name": "_since", "in": "query", "required": False,
             "schema": {"type": "string", "format": "date-time"}},
            {"name": "_outputFormat", "in": "query", "required": False,
             "schema": {"type": "string"}},
            {"name": "_typeFilter", "in": "query", "required": False,
             "schema": {"type": "string"}, "description": "Type?search, ORed per type"},
            {"name": "_elements", "in": "query", "required": False,
             "schema": {"type": "string"}},
            {"name": "patient", "in": "query", "required": False,
             "schema": {"type": "string"}, "description": "Patient/id (Patient, Group level)"},
            {"name": "includeAssociatedData", "in": "query", "required": False,
             "schema": {"type": "string"}},
        ]  # fmt: skip
        if post:  # the parameters are in the body (the URL may carry others)
            parameters = parameters[:1]
    elif cancel:
        responses[202] = {"description": "Cancelled"}
    elif file:
        responses[200] = {"description": "NDJSON", "content": {"application/fhir+ndjson": {}}}
    else:
        responses[202] = {
            "description": "In progress",
            "headers": {"X-Progress": {"schema": {"type": "string"}}},
        }
        responses[200] = {
            "description": "The manifest",
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    return {
        "summary": summary,
        "responses": responses,
        "openapi_extra": {"parameters": parameters, **extra},
        "response_class": Response,
    }


def route(summary: str, statuses: set[int], body: str | None = None) -> dict[str, Any]:
    """Keyword arguments for a FastAPI route decorator."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status in sorted(statuses | _ALWAYS):
        response: dict[str, Any] = {"description": _DESCRIPTIONS[status]}
        if status not in _NO_BODY:
            response["content"] = {
                media: {"schema": {"type": "object"}} for media in (FHIR_JSON, "application/json")
            }
            response["content"][FHIR_XML] = {"schema": _XML_SCHEMA}
        responses[status] = response
    parameters = list(_COMMON_PARAMS)
    if summary == "search":
        parameters.extend(_SEARCH_PARAMS)
    if summary == "search definitions":
        parameters.extend(_DEFINITION_PARAMS)
    if (body is not None or "delete" in summary) and all(
        p["name"] != "Prefer" for p in parameters
    ):  # one Prefer parameter (a search's already says handling=...)
        parameters.append(_PREFER)
    if summary.startswith("conditional"):
        parameters.append(
            {
                "name": "criteria",
                "in": "query",
                "required": False,
                "style": "form",
                "explode": True,
                "schema": {"type": "object", "additionalProperties": {"type": "string"}},
                "description": "search parameters selecting the resource",
            }
        )
    if summary == "create":
        parameters.append(
            {
                "name": "If-None-Exist",
                "in": "header",
                "required": False,
                "schema": {"type": "string"},
                "description": "search criteria: create only if none match",
            }
        )
    if summary == "everything":
        parameters.extend(
            [
                {
                    "name": "_since",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "format": "date-time"},
                },
                {"name": "_type", "in": "query", "required": False, "schema": {"type": "string"}},
                {
                    "name": "_count",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 0},
                },
                {"name": "_cursor", "in": "query", "required": False, "schema": {"type": "string"}},
            ]
        )
    if summary.startswith("history"):
        parameters.extend(_HISTORY_PARAMS)
    extra: dict[str, Any] = {"parameters": parameters}
    if body is not None:
        extra["requestBody"] = {"required": True, "content": _BODIES[body]}
    return {
        "summary": summary,
        "responses": responses,
        "openapi_extra": extra,
        "response_class": Response,
    }
