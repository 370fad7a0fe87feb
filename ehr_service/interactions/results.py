"""The result of an interaction, and how ``Prefer: return`` shapes its body."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from ehr_service.fhir import jsonio
from ehr_service.fhir.errors import Category, Issue, information_outcome
from ehr_service.fhir.primitives import etag, http_date
from ehr_service.interactions.context import ReturnPreference

REASON_PHRASES = {
    200: "OK",
    201: "Created",
    204: "No Content",
    304: "Not Modified",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    409: "Conflict",
    410: "Gone",
    412: "Precondition Failed",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
}


def status_line(status: int) -> str:
    """``Bundle.entry.response.status``: the code and its phrase, e.g. ``201 Created``."""
    phrase = REASON_PHRASES.get(status)
    return f"{status} {phrase}" if phrase else str(status)


@dataclass(frozen=True, slots=True)
class Result:
    """What an interaction produced. ``body`` is stored JSON bytes or a dict."""

    status: int
    body: bytes | dict[str, Any] | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    version_id: int | None = None
    last_updated: datetime | None = None
    location: str | None = None  # relative: Type/id/_history/n
    message: str | None = None  # set by writes only: what happened, for return=OperationOutcome
    warnings: tuple[Issue, ...] = ()  # accepted with these warnings (e.g. an ID number check)
    patients: frozenset[str] = frozenset()  # whose records this touched (for the audit)

    @staticmethod
    def owners(*patients: str | None) -> frozenset[str]:
        return frozenset(p for p in patients if p)

    def headers(self, base_url: str) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.version_id is not None:
            out["ETag"] = etag(self.version_id)
        if self.last_updated is not None:
            out["Last-Modified"] = http_date(self.last_updated)
        if self.location is not None:
            out["Location"] = f"{base_url}/{self.location}"
        return out

    def shaped(self, preference: ReturnPreference) -> Result:
        """Apply ``Prefer: return`` to a write result (R4 §3.1.0.8.1)."""
        if preference is ReturnPreference.MINIMAL:
            return replace(self, body=None)
        if preference is ReturnPreference.OPERATION_OUTCOME:
            outcome = information_outcome(self.message or status_line(self.status))
            outcome["issue"].extend(w.as_json(Category.UNPROCESSABLE) for w in self.warnings)
            return replace(self, status=200 if self.status == 204 else self.status, body=outcome)
        return self

    def body_bytes(self) -> bytes | None:
        if self.body is None or isinstance(self.body, bytes):
            return self.body
        return jsonio.dumps(self.body)
