"""patch (R4 §3.1.0.4.1) with JSON Patch (RFC 6902), JSON merge patch (RFC 7396)
or FHIRPath Patch (a Parameters resource, R4 §2.40).

Which one a body is comes from its media type: ``application/json-patch+json``,
``application/merge-patch+json``, or a FHIR type (``application/fhir+json``,
``application/json``, FHIR XML) whose body is a Parameters resource (FHIRPath
Patch), an array (JSON Patch) or another object (merge patch). The patch applies
to the current version; the result is validated like any update and may not
change the resource's type or id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import jsonpatch
import jsonpointer
from sqlalchemy import Connection

from ehr_service.fhir import jsonio
from ehr_service.fhir.errors import Category, FhirError
from ehr_service.fhir.patches import MERGE_PATCH_MEDIA_TYPE as MERGE_PATCH_MEDIA_TYPE
from ehr_service.fhir.patches import apply_fhirpath_patch, merge_patch
from ehr_service.interactions.context import RequestContext
from ehr_service.interactions.read import current_or_fail
from ehr_service.interactions.results import Result
from ehr_service.interactions.update import check_if_match, store_next_version
from ehr_service.security.policy import require

JSON_PATCH_MEDIA_TYPE = "application/json-patch+json"
# What the CapabilityStatement lists as patchFormat (FHIRPath Patch in both formats).
PATCH_FORMATS = (
    JSON_PATCH_MEDIA_TYPE,
    MERGE_PATCH_MEDIA_TYPE,
    "application/fhir+json",
    "application/fhir+xml",
)
_OPERATIONS = {"add", "remove", "replace", "move", "copy", "test"}
Kind = Literal["json-patch", "merge-patch", "fhirpath-patch"]


@dataclass(frozen=True, slots=True)
class PatchDocument:
    kind: Kind
    body: Any


def patch_document(media_type: str | None, body: Any) -> PatchDocument:
    """The patch a body is, by its media type and then (FHIR types) its shape."""
    if media_type == JSON_PATCH_MEDIA_TYPE:
        return PatchDocument("json-patch", body)
    if media_type == MERGE_PATCH_MEDIA_TYPE:
        return PatchDocument("merge-patch", body)
    if isinstance(body, dict) and body.get("resourceType") == "Parameters":
        return PatchDocument("fhirpath-patch", body)
    if isinstance(body, list):
        return PatchDocument("json-patch", body)
    return PatchDocument("merge-patch", body)


def _apply(current: dict[str, Any], document: PatchDocument) -> Any:
    if document.kind == "json-patch":
        return apply_json_patch(current, check_patch_document(document.body))
    if document.kind == "fhirpath-patch":
        return apply_fhirpath_patch(current, document.body)
    if not isinstance(document.body, dict):
        raise FhirError.of(
            Category.INCORRECT, "A JSON merge patch must be a JSON object", code="structure"
        )
    return merge_patch(current, document.body)


def check_patch_document(document: Any) -> list[dict[str, Any]]:
    """A JSON Patch document is an array of operation objects; else 400."""
    if not isinstance(document, list) or not document:
        raise FhirError.of(
            Category.INCORRECT, "A JSON Patch document must be a non-empty array", code="structure"
        )
    for index, operation in enumerate(document):
        if (
            not isinstance(operation, dict)
            or not isinstance(operation.get("op"), str)
            or operation["op"] not in _OPERATIONS
            or not isinstance(operation.get("path"), str)
        ):
            raise FhirError.of(
                Category.INCORRECT,
                f"Patch operation {index} needs an 'op' ({', '.join(sorted(_OPERATIONS))}) "
                "and a string 'path'",
                code="structure",
                expression=[f"[{index}]"],
            )
    return document


def apply_json_patch(current: dict[str, Any], document: list[dict[str, Any]]) -> Any:
    """Apply the operations one by one, so a failure names its operation and path;
    messages never quote values (they may be protected data)."""
    patched: Any = current
    for index, operation in enumerate(document):
        try:
            patched = jsonpatch.apply_patch(patched, [operation], in_place=False)
        except jsonpatch.JsonPatchTestFailed:
            raise FhirError.of(
                Category.UNPROCESSABLE,
                f"JSON Patch operation {index} (test at {operation['path'][:200]}) failed",
                code="processing",
                expression=[f"[{index}]"],
            ) from None
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException):
            raise FhirError.of(
                Category.UNPROCESSABLE,
                f"JSON Patch operation {index} ({operation['op']} at "
                f"{operation['path'][:200]}) cannot be applied",
                code="processing",
                expression=[f"[{index}]"],
            ) from None
    return patched


def patch(
    conn: Connection,
    ctx: RequestContext,
    resource_type: str,
    resource_id: str,
    document: Any,
    if_match: int | None = None,
) -> Result:
    require(ctx.caller, resource_type, "u")
    if not isinstance(document, PatchDocument):
        document = patch_document(None, document)
    if document.kind == "json-patch":
        check_patch_document(document.body)  # a malformed patch is a 400 before any read
    stored = current_or_fail(conn, resource_type, resource_id, for_update=True, view=ctx.view)
    check_if_match(stored, if_match, f"{resource_type}/{resource_id}")
    assert stored.content is not None
    # The patch sees what this caller may see: ID numbers unsealed for staff, masked
    # for everyone else (a masked value left unchanged keeps its number).
    protection = ctx.services.identity.protection
    current = protection.present_json(
        jsonio.loads(stored.content), reveal=ctx.caller.sees_id_numbers
    )
    patched = _apply(current, document)
    if not isinstance(patched, dict) or patched.get("resourceType") != resource_type:
        raise FhirError.of(
            Category.UNPROCESSABLE, "A patch may not change the resource type", code="processing"
        )
    if patched.get("id") != resource_id:
        raise FhirError.of(
            Category.UNPROCESSABLE, "A patch may not change the resource id", code="processing"
        )
    return store_next_version(conn, ctx, stored, patched, method="PATCH")
