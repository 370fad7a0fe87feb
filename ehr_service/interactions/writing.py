"""Turn a resource into a version ready to store: server meta, validation, owner.

The server owns ``id``, ``meta.versionId`` and ``meta.lastUpdated`` (R4 §3.1.0.1.1):
whatever the client sent there is replaced, and what is stored (and later
served byte for byte) is the client's JSON with those three set.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from ehr_service.fhir.errors import Category, FhirError
from ehr_service.fhir.primitives import format_instant
from ehr_service.fhir.search.values import index_rows
from ehr_service.fhir.validation import validate_resource
from ehr_service.interactions.context import RequestContext
from ehr_service.storage.resources import NewVersion


def with_server_meta(
    resource: dict[str, Any], resource_id: str, version_id: int, now: datetime
) -> dict[str, Any]:
    meta = resource.get("meta")
    meta = dict(meta) if isinstance(meta, dict) else {}
    meta["versionId"] = str(version_id)
    meta["lastUpdated"] = format_instant(now)
    out: dict[str, Any] = {"resourceType": resource.get("resourceType"), "id": resource_id}
    out["meta"] = meta
    for key, value in resource.items():
        if key not in out:
            out[key] = value
    return out


def prepare_version(
    ctx: RequestContext,
    resource: Any,
    *,
    resource_type: str,
    resource_id: str,
    version_id: int,
    now: datetime,
    method: str,
) -> tuple[NewVersion, dict[str, Any]]:
    """Validate and serialise one version. Raises a 400 listing every problem."""
    if not isinstance(resource, dict):
        raise FhirError.of(Category.INCORRECT, "A resource must be a JSON object", code="structure")
    if "meta" in resource and not isinstance(resource["meta"], dict):
        raise FhirError.of(
            Category.INCORRECT, "meta must be an object", code="structure", expression=["meta"]
        )
    stored = with_server_meta(resource, resource_id, version_id, now)
    validate_resource(stored, expected_type=resource_type)
    version = NewVersion(
        resource_type=resource_type,
        resource_id=resource_id,
        version_id=version_id,
        last_updated=now,
        method=method,
        compartment_patient_id=ctx.services.compartment.owner(stored),
        content=orjson.dumps(stored),
        index=index_rows(ctx.services.registry, stored),
    )
    return version, stored
