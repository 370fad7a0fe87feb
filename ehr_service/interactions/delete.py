"""delete (R4 §3.1.0.6): a new version marks the resource deleted; history keeps all."""

from __future__ import annotations

from sqlalchemy import Connection

from ehr_service.fhir.errors import Category, FhirError
from ehr_service.fhir.primitives import utc_now
from ehr_service.interactions.context import RequestContext
from ehr_service.interactions.read import check_consent, not_found, visible_to
from ehr_service.interactions.results import Result
from ehr_service.interactions.update import check_if_match
from ehr_service.security.policy import check_write, require
from ehr_service.storage import resources


def delete(
    conn: Connection,
    ctx: RequestContext,
    resource_type: str,
    resource_id: str,
    if_match: int | None = None,
) -> Result:
    require(ctx.caller, resource_type, "d")
    what = f"{resource_type}/{resource_id}"
    stored = resources.read_current(conn, resource_type, resource_id, for_update=True)
    if stored is None or not visible_to(conn, ctx.view, resource_type, resource_id, stored):
        raise not_found(resource_type, resource_id)
    check_write(ctx.view, resource_type, stored.compartment_patient_id)
    check_consent(conn, ctx.view, stored.compartment_patient_id)
    if stored.deleted:
        # Deleting a deleted resource changes nothing (idempotent, no new version).
        return Result(
            204,
            None,
            resource_type,
            resource_id,
            stored.version_id,
            stored.last_updated,
            message=f"{what} was already deleted",
        )
    check_if_match(stored, if_match, what)
    version = ctx.services.pipeline.deletion(conn, ctx.write_request, stored, utc_now())
    if not resources.replace_current(conn, version, stored.version_id):
        raise FhirError.of(Category.CONFLICT, f"{what} was changed concurrently; retry")
    return Result(
        204,
        None,
        resource_type,
        resource_id,
        version.version_id,
        version.last_updated,
        message=f"Deleted {what}",
        patients=Result.owners(stored.compartment_patient_id),
    )
