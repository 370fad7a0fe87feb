"""update and update-as-create (R4 §3.1.0.4), with ``If-Match`` (§3.1.0.7).

Versions are numbered under a row lock (PostgreSQL ``FOR UPDATE``; SQLite's
``BEGIN IMMEDIATE``) and written with a compare-and-set on the current
version, so concurrent updates never produce gaps or duplicate versions.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from ehr_service.fhir.errors import Category, FhirError
from ehr_service.fhir.primitives import utc_now
from ehr_service.interactions.context import RequestContext
from ehr_service.interactions.create import created
from ehr_service.interactions.read import check_consent, not_found, visible_to
from ehr_service.interactions.results import Result
from ehr_service.interactions.writing import prepare_version
from ehr_service.security.policy import check_write, require
from ehr_service.storage import resources
from ehr_service.storage.resources import StoredVersion


def check_body_id(body: Any, resource_id: str) -> None:
    """R4 §3.1.0.4: the body must carry an id equal to the one in the URL."""
    body_id = body.get("id") if isinstance(body, dict) else None
    if body_id is None:
        raise FhirError.of(
            Category.INCORRECT,
            "An update must carry the resource id",
            code="required",
            expression=["id"],
        )
    if body_id != resource_id:
        raise FhirError.of(
            Category.INCORRECT,
            f"The resource id '{str(body_id)[:64]}' differs from the id in the URL '{resource_id}'",
            code="invalid",
            expression=["id"],
        )


def check_if_match(stored: StoredVersion | None, if_match: int | None, what: str) -> None:
    if if_match is None:
        return
    if stored is None or stored.deleted or stored.version_id != if_match:
        current = "none" if stored is None or stored.deleted else f'W/"{stored.version_id}"'
        raise FhirError.of(
            Category.PRECONDITION_FAILED,
            f'If-Match W/"{if_match}" does not match the current version ({current}) of {what}',
        )


def store_next_version(
    conn: Connection,
    ctx: RequestContext,
    stored: StoredVersion,
    body: Any,
    *,
    method: str,
) -> Result:
    """Write ``body`` as the version after ``stored`` (locked by the caller)."""
    check_write(ctx.view, stored.resource_type, stored.compartment_patient_id)
    version = ctx.services.pipeline.store_next(
        conn, ctx.write_request, stored, body, method=method, now=utc_now()
    )
    if version is None:
        raise FhirError.of(
            Category.CONFLICT,
            f"{stored.resource_type}/{stored.resource_id} was changed concurrently; retry",
            code="conflict",
        )
    if stored.deleted:
        return created(version)
    return Result(
        200,
        version.content,
        version.resource_type,
        version.resource_id,
        version.version_id,
        version.last_updated,
        message=f"Updated {version.resource_type}/{version.resource_id}",
        warnings=version.warnings,
        patients=Result.owners(version.compartment_patient_id, stored.compartment_patient_id),
    )


def update(
    conn: Connection,
    ctx: RequestContext,
    resource_type: str,
    resource_id: str,
    body: Any,
    if_match: int | None = None,
) -> Result:
    require(ctx.caller, resource_type, "u")
    check_body_id(body, resource_id)
    what = f"{resource_type}/{resource_id}"
    stored = resources.read_current(conn, resource_type, resource_id, for_update=True)
    if ctx.view.patient is not None and (
        stored is None or not visible_to(conn, ctx.view, resource_type, resource_id, stored)
    ):
        # A patient-bound token chooses no ids (no update-as-create), so another
        # resident's resource answers exactly as an unknown id does.
        raise not_found(resource_type, resource_id)
    if stored is not None:  # before If-Match: no version probing of what one may not touch
        check_write(ctx.view, resource_type, stored.compartment_patient_id)
        check_consent(conn, ctx.view, stored.compartment_patient_id)
    check_if_match(stored, if_match, what)
    if stored is not None:
        return store_next_version(conn, ctx, stored, body, method="PUT")
    require(ctx.caller, resource_type, "c")  # update as create
    version, _ = prepare_version(
        conn,
        ctx,
        body,
        resource_type=resource_type,
        resource_id=resource_id,
        version_id=1,
        now=utc_now(),
        method="PUT",
    )
    if resources.insert_if_absent(conn, version):
        return created(version)
    # A concurrent update-as-create won: continue from its version.
    stored = resources.read_current(conn, resource_type, resource_id, for_update=True)
    if stored is None:  # pragma: no cover - the conflicting row must be visible now
        raise FhirError.of(Category.CONFLICT, f"{what} was changed concurrently; retry")
    return store_next_version(conn, ctx, stored, body, method="PUT")
