"""Turn a resource into a version ready to store: server meta, validation, owner.

The server owns ``id``, ``meta.versionId`` and ``meta.lastUpdated`` (R4 §3.1.0.1.1):
whatever the client sent there is replaced, and what is stored (and later
served byte for byte) is the client's JSON with those three set.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Connection

from ehr_service.fhir.errors import Category, FhirError, Issue
from ehr_service.fhir.primitives import format_instant
from ehr_service.fhir.search.values import IndexRows, index_rows
from ehr_service.fhir.validation import validate_resource
from ehr_service.interactions.audit_events import READ_ONLY_TYPES, read_only
from ehr_service.interactions.context import RequestContext
from ehr_service.mpi.idnumber import ID_NUMBER_SYSTEM
from ehr_service.mpi.protection import Prepared
from ehr_service.recognition.marks import apply_mark, forget_institution
from ehr_service.recognition.terminology import catalogue_resolver
from ehr_service.security.consent import refusals
from ehr_service.security.policy import check_write
from ehr_service.security.references import check_patient_references
from ehr_service.storage.database import transaction_cache
from ehr_service.storage.resources import NewVersion

# ``Type/id`` of what the current transaction Bundle creates: references to them are
# to the caller's own record even before they are stored.
PENDING_IDENTITIES = "pending-identities"


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
    conn: Connection,
    ctx: RequestContext,
    resource: Any,
    *,
    resource_type: str,
    resource_id: str,
    version_id: int,
    now: datetime,
    method: str,
    previous: bytes | None = None,
) -> tuple[NewVersion, dict[str, Any]]:
    """Validate and serialise one version. Raises a 400 listing every problem.

    ``previous`` is the stored content of the version this one follows. Resident
    ID numbers are checked, indexed by blind token and stored sealed (see
    :mod:`ehr_service.mpi.protection`); what is returned is the stored form.
    """
    if not isinstance(resource, dict):
        raise FhirError.of(Category.INCORRECT, "A resource must be a JSON object", code="structure")
    if resource_type in READ_ONLY_TYPES:  # on every path: HTTP, bundles, import, exchange
        raise read_only(resource_type, method, f"/{resource_type}")
    if "meta" in resource and not isinstance(resource["meta"], dict):
        raise FhirError.of(
            Category.INCORRECT, "meta must be an object", code="structure", expression=["meta"]
        )
    stored = with_server_meta(resource, resource_id, version_id, now)
    validate_resource(stored, expected_type=resource_type)
    check_conformance(ctx, stored)
    if resource_type == "Organization":
        forget_institution(conn, resource_id)
    if resource_type == "Organization" and ctx.services.catalogues is not None:
        from ehr_service.interactions.recognition import remark_institution

        remark_institution(conn, ctx, resource_id, stored)  # its results' marks follow it
    apply_mark(  # the recognition mark: set by the server only (DESIGN.md §7)
        conn,
        ctx.services.catalogues,
        ctx.settings.recognition_mark,
        resource_type,
        stored,
    )
    identity = ctx.services.identity
    prepared = identity.prepare(conn, stored, orjson.loads(previous) if previous else None)
    content, index = _sealed(ctx, prepared)
    if identity.protection.has_free_text_number(content, prepared.values):
        identity.protection.mask_free_text(stored, prepared.values)
        prepared.warnings.append(FREE_TEXT_WARNING)
        content, index = _sealed(ctx, prepared)
    patients = list(ctx.services.compartment.patient_ids(stored, ctx.base_url))
    owner = patients[0] if patients else None
    check_write(ctx.view, resource_type, owner, patients)  # a patient token: its record only
    check_patient_references(
        conn, ctx.view, stored, ctx.base_url, transaction_cache(conn, PENDING_IDENTITIES)
    )
    # Results go to partners (not back: what a partner sent is theirs to share).
    outbox = () if ctx.from_partner else ctx.services.share(conn, resource_type, stored, owner)
    version = NewVersion(
        resource_type=resource_type,
        resource_id=resource_id,
        version_id=version_id,
        last_updated=now,
        method=method,
        compartment_patient_id=owner,
        content=content,
        index=index,
        id_number=prepared.unique_key,
        warnings=tuple(prepared.warnings),
        consent=refusals(stored) if resource_type == "Consent" else None,
        outbox=outbox,
    )
    ctx.services.writes.written(resource_type)
    return version, stored


FREE_TEXT_WARNING = Issue(
    "A resident ID number outside an identifier (e.g. in text) was masked; "
    f"send ID numbers as identifiers of system {ID_NUMBER_SYSTEM}",
    "value",
    "warning",
)


def check_conformance(ctx: RequestContext, resource: dict[str, Any]) -> None:
    """Required-binding codes (400), and the service's profiles the resource claims
    in meta.profile (422: it is valid FHIR, but not what it claims to be)."""
    conformance = ctx.services.conformance
    if conformance is None:
        return
    issues = conformance.bindings.issues(resource)
    if issues:
        raise FhirError(Category.INCORRECT, tuple(issues))
    claimed = conformance.profiles.claimed(resource)
    if claimed:
        resolver = catalogue_resolver(ctx.services.catalogues)
        found = conformance.profile_issues(resource, claimed, resolver)
        if found:
            raise FhirError(Category.UNPROCESSABLE, tuple(found))


def _sealed(ctx: RequestContext, prepared: Prepared) -> tuple[bytes, IndexRows]:
    """Index the blind tokens, then store masks and seals."""
    prepared.index_form()
    index = index_rows(ctx.services.registry, prepared.resource)
    prepared.stored_form(ctx.services.identity.protection.seal)
    return orjson.dumps(prepared.resource), index
