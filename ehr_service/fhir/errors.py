"""Errors as data: every failure carries a category; one function maps it to HTTP.

Domain and storage code raise :class:`FhirError` (or a subclass) with a
:class:`Category` and one or more :class:`Issue` entries. The web layer never
decides a status itself: it calls :func:`http_status` and
:func:`operation_outcome` (FHIR R4 RESTful API §3.1.0.4, OperationOutcome).

    FhirError
    ├── category            -> HTTP status (http_status)
    └── issues: [Issue]     -> OperationOutcome.issue (severity, code,
                               diagnostics, expression)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Category(StrEnum):
    """What kind of failure, independent of any transport."""

    INCORRECT = "incorrect"  # malformed request or resource
    UNAUTHORIZED = "unauthorized"  # no or bad credentials
    FORBIDDEN = "forbidden"  # authenticated, not allowed
    NOT_FOUND = "not-found"
    METHOD_NOT_ALLOWED = "method-not-allowed"
    NOT_ACCEPTABLE = "not-acceptable"  # cannot produce a format the client accepts
    CONFLICT = "conflict"
    GONE = "gone"  # deleted
    PRECONDITION_FAILED = "precondition-failed"
    TOO_LARGE = "too-large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported-media-type"
    UNPROCESSABLE = "unprocessable"  # valid FHIR, violates a business rule or profile
    BUSY = "busy"  # rate limited
    UNAVAILABLE = "unavailable"  # a dependency (the database) is down; retry later
    NOT_IMPLEMENTED = "not-implemented"
    FAULT = "fault"  # our bug


# category -> (HTTP status, default OperationOutcome.issue.code)
_CATEGORY_MAP: dict[Category, tuple[int, str]] = {
    Category.INCORRECT: (400, "invalid"),
    Category.UNAUTHORIZED: (401, "login"),
    Category.FORBIDDEN: (403, "forbidden"),
    Category.NOT_FOUND: (404, "not-found"),
    Category.METHOD_NOT_ALLOWED: (405, "not-supported"),
    Category.NOT_ACCEPTABLE: (406, "not-supported"),
    Category.CONFLICT: (409, "conflict"),
    Category.GONE: (410, "deleted"),
    Category.PRECONDITION_FAILED: (412, "conflict"),
    Category.TOO_LARGE: (413, "too-long"),
    Category.UNSUPPORTED_MEDIA_TYPE: (415, "not-supported"),
    Category.UNPROCESSABLE: (422, "processing"),
    Category.BUSY: (429, "throttled"),
    Category.UNAVAILABLE: (503, "transient"),
    Category.NOT_IMPLEMENTED: (501, "not-supported"),
    Category.FAULT: (500, "exception"),
}


def http_status(category: Category) -> int:
    """The one place a failure category becomes an HTTP status."""
    return _CATEGORY_MAP[category][0]


def default_issue_code(category: Category) -> str:
    return _CATEGORY_MAP[category][1]


@dataclass(frozen=True, slots=True)
class Issue:
    """One OperationOutcome.issue. ``code`` is an R4 IssueType code."""

    diagnostics: str
    code: str | None = None  # None: the category's default code
    severity: str = "error"
    expression: tuple[str, ...] = ()

    def as_json(self, category: Category) -> dict[str, Any]:
        out: dict[str, Any] = {
            "severity": self.severity,
            "code": self.code or default_issue_code(category),
            "diagnostics": self.diagnostics,
        }
        if self.expression:
            out["expression"] = list(self.expression)
        return out


@dataclass(eq=False)
class FhirError(Exception):
    """A failure with a category and the issues that explain it."""

    category: Category
    issues: Sequence[Issue] = field(default_factory=tuple)
    headers: dict[str, str] = field(default_factory=dict)
    # Whose records the refused request concerned (for the audit; never rendered).
    patients: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        super().__init__(self.category.value, *(i.diagnostics for i in self.issues))

    @classmethod
    def of(
        cls,
        category: Category,
        diagnostics: str,
        *,
        code: str | None = None,
        expression: Iterable[str] = (),
    ) -> FhirError:
        return cls(category, (Issue(diagnostics, code, "error", tuple(expression)),))

    @property
    def status(self) -> int:
        return http_status(self.category)

    def __str__(self) -> str:
        return f"{self.category.value}: " + "; ".join(i.diagnostics for i in self.issues)


def operation_outcome(
    category: Category, issues: Iterable[Issue], *, resource_id: str | None = None
) -> dict[str, Any]:
    """Render issues as an R4 OperationOutcome resource (a plain dict)."""
    rendered = [issue.as_json(category) for issue in issues]
    if not rendered:
        rendered = [
            {
                "severity": "error",
                "code": default_issue_code(category),
                "diagnostics": category.value,
            }
        ]
    outcome: dict[str, Any] = {"resourceType": "OperationOutcome"}
    if resource_id:
        outcome["id"] = resource_id
    outcome["issue"] = rendered
    return outcome


def error_outcome(error: FhirError) -> dict[str, Any]:
    return operation_outcome(error.category, error.issues)


def information_outcome(diagnostics: str, code: str = "informational") -> dict[str, Any]:
    """An OperationOutcome that reports success (``Prefer: return=OperationOutcome``)."""
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "information", "code": code, "diagnostics": diagnostics}],
    }


def unexpected(request_id: str) -> FhirError:
    """The answer to a bug: a 500 that names the request, never its details."""
    return FhirError.of(
        Category.FAULT,
        f"An unexpected error occurred; quote request id {request_id} when reporting it",
    )
