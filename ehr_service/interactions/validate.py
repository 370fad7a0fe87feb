"""``$validate`` (R4 §2.38: Resource/$validate, type and instance level).

Checks a resource as the server would on write (the model library, required
bindings), plus a profile: the ``profile`` parameter, else the service's profiles
the resource claims in ``meta.profile``. Answers 200 with an OperationOutcome
listing every problem (or one information issue when there is none); ``mode=delete``
checks that the resource exists. The resource is never stored.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from ehr_service.fhir import jsonio
from ehr_service.fhir.errors import Category, FhirError, Issue
from ehr_service.fhir.parameters import OperationInput
from ehr_service.fhir.validation import check_resource_type, resource_issues
from ehr_service.interactions.context import RequestContext
from ehr_service.interactions.read import current_or_fail
from ehr_service.interactions.results import Result
from ehr_service.pipeline.core import READ_ONLY_TYPES, read_only
from ehr_service.recognition.terminology import catalogue_resolver
from ehr_service.security.policy import require

MODES = ("create", "update", "delete", "profile")


def _arguments(body: Any, query: dict[str, list[str]]) -> tuple[Any, str | None, str | None]:
    """(resource, profile, mode) from a Parameters body, a bare resource, or the query."""
    profile = next(iter(query.get("profile") or ()), None)
    mode = next(iter(query.get("mode") or ()), None)
    if isinstance(body, dict) and body.get("resourceType") == "Parameters":
        params = OperationInput(body, "$validate")
        part = params.one("resource")
        resource = part.get("resource") if part else None
        given = params.one("profile") or {}
        profile = given.get("valueUri", given.get("valueCanonical", profile))
        mode = (params.one("mode") or {}).get("valueCode", mode)
    else:
        resource = body
    for name, value in (("profile", profile), ("mode", mode)):
        if value is not None and not isinstance(value, str):
            raise FhirError.of(
                Category.INCORRECT, f"{name} must be a string", code="value", expression=[name]
            )
    return resource, profile, mode


def validate(
    conn: Connection,
    ctx: RequestContext,
    resource_type: str,
    resource_id: str | None,
    body: Any,
) -> Result:
    if resource_type in READ_ONLY_TYPES:  # nothing could be written: nothing to check
        path = f"/{resource_type}" + (f"/{resource_id}" if resource_id else "") + "/$validate"
        raise read_only(resource_type, "$validate", path)
    resource, profile, mode = _arguments(body, ctx.query)
    if mode is not None and mode not in MODES:
        raise FhirError.of(
            Category.INCORRECT,
            f"mode must be one of {', '.join(MODES)}",
            code="value",
            expression=["mode"],
        )
    if resource_id is not None:
        require(ctx.caller, resource_type, "r")
        stored = current_or_fail(conn, resource_type, resource_id, view=ctx.view)
        if mode == "delete":
            return _outcome([])
        if resource is None:
            resource = jsonio.loads(stored.content or b"{}")
    else:
        require(ctx.caller, resource_type, "c" if mode != "update" else "u")
    if resource is None:
        raise FhirError.of(
            Category.INCORRECT,
            "$validate needs a resource to validate",
            code="required",
            expression=["resource"],
        )
    issues = _issues(ctx, resource_type, resource, profile)
    return _outcome(issues)


def _issues(
    ctx: RequestContext, resource_type: str, resource: Any, profile: str | None
) -> list[Issue]:
    # What is not a resource of this type cannot be validated: 400 (R4 §2.38).
    if not isinstance(resource, dict):
        raise FhirError.of(Category.INCORRECT, "A resource must be a JSON object", code="structure")
    actual = check_resource_type(resource)
    if actual != resource_type:
        raise FhirError.of(
            Category.INCORRECT,
            f"resourceType '{actual}' does not match the URL's type '{resource_type}'",
            code="invalid",
            expression=["resourceType"],
        )
    issues = list(resource_issues(resource, actual))
    conformance = ctx.services.conformance
    if conformance is None:
        return issues
    issues += conformance.bindings.issues(resource)
    urls = [profile] if profile else conformance.profiles.claimed(resource)
    if profile and profile.split("|")[0] not in conformance.profiles.by_url:
        issues.append(
            Issue(
                f"Profile {profile[:200]} is not known to this server",
                "not-supported",
                severity="warning",
            )
        )
    resolver = catalogue_resolver(ctx.services.catalogues)
    return issues + conformance.profile_issues(resource, urls, resolver)


def _outcome(issues: list[Issue]) -> Result:
    if not issues:
        body = {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "information", "code": "informational", "diagnostics": "Valid"}],
        }
        return Result(200, body)
    return Result(
        200,
        {
            "resourceType": "OperationOutcome",
            "issue": [i.as_json(Category.INCORRECT) for i in issues],
        },
    )
