"""read and vread (R4 §3.1.0.2, §3.1.0.3)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from ehr_service.fhir import jsonio
from ehr_service.fhir.compartment import Visibility
from ehr_service.fhir.errors import Category, FhirError, Issue
from ehr_service.fhir.search.shaping import requested_elements, subset, summary_of
from ehr_service.interactions.context import RequestContext
from ehr_service.interactions.results import Result
from ehr_service.security.policy import can_see, require
from ehr_service.storage import consent as consent_store
from ehr_service.storage import resources
from ehr_service.storage.resources import StoredVersion
from ehr_service.storage.search_sql import refers_to_another_patient


def gone(stored: StoredVersion) -> FhirError:
    """410 for a deleted resource, carrying its ETag like any other answer."""
    return FhirError(
        Category.GONE,
        (Issue(f"{stored.resource_type}/{stored.resource_id} was deleted"),),
        headers={"ETag": f'W/"{stored.version_id}"'},
    )


def visible_to(
    conn: Connection,
    view: Visibility,
    resource_type: str,
    resource_id: str,
    stored: StoredVersion,
) -> bool:
    """Compartment visibility, plus: a resource outside every compartment that
    refers to another resident (a Device's patient) is that resident's data."""
    if not can_see(view, resource_type, stored.compartment_patient_id):
        return False
    if view.patient is None or stored.compartment_patient_id is not None:
        return True
    return not refers_to_another_patient(conn, resource_type, resource_id, view.patient)


def check_consent(conn: Connection, view: Visibility, owner: str | None) -> None:
    """403 when the resident refused sharing with this caller (docs/architecture.md §9),
    or, under EHR_SHARING_POLICY=consent-required, gave this caller's region no permit."""
    if owner and view.refused_actors and consent_store.refused(conn, owner, view.refused_actors):
        raise refusal_of(owner)
    check_permit(conn, view, owner)


def check_permit(conn: Connection, view: Visibility, owner: str | None) -> None:
    if (
        owner
        and view.permit_actors
        and not consent_store.permitted(conn, owner, view.permit_actors)
    ):
        raise no_permit(owner)


def no_permit(owner: str) -> FhirError:
    refusal = FhirError.of(
        Category.FORBIDDEN,
        "The resident has not consented to sharing this record with your region "
        "(this service shares across regions only with the resident's separate consent)",
        code="suppressed",
    )
    refusal.patients = frozenset({owner})
    return refusal


def refusal_of(owner: str) -> FhirError:
    refusal = FhirError.of(
        Category.FORBIDDEN,
        "The resident has refused sharing this record with your organisation or region",
        code="suppressed",
    )
    refusal.patients = frozenset({owner})  # the refused attempt shows in their access log
    return refusal


def not_found(resource_type: str, resource_id: str) -> FhirError:
    return FhirError.of(Category.NOT_FOUND, f"{resource_type}/{resource_id} is not known")


def current_or_fail(
    conn: Connection,
    resource_type: str,
    resource_id: str,
    *,
    for_update: bool = False,
    view: Visibility | None = None,
) -> StoredVersion:
    """The live current version; 404 if it never existed (or ``view`` may not see
    it), 410 if deleted."""
    # A plain read asks the consent in the statement that reads the resource. A
    # locking read asks after it holds the lock: a refusal committed while it waited
    # is then seen (the locking statement's snapshot predates the wait).
    folded = view is not None and not for_update
    actors = view.refused_actors if view is not None and folded else ()
    stored = resources.read_current(
        conn, resource_type, resource_id, for_update=for_update, refused_actors=actors
    )
    if stored is None or (
        view is not None and not visible_to(conn, view, resource_type, resource_id, stored)
    ):
        raise not_found(resource_type, resource_id)
    if stored.refused and stored.compartment_patient_id:
        raise refusal_of(stored.compartment_patient_id)
    if view is not None and not folded:
        check_consent(conn, view, stored.compartment_patient_id)
    elif view is not None:
        check_permit(conn, view, stored.compartment_patient_id)
    if stored.deleted:
        raise gone(stored)
    return stored


class Shape:
    """``_summary`` and ``_elements`` of a read (R4 §3.1.0.2: a read may be subset
    like a search), checked before anything is read."""

    def __init__(self, ctx: RequestContext, resource_type: str) -> None:
        self.summary = summary_of(ctx.query)
        if self.summary == "count":
            raise FhirError.of(
                Category.INCORRECT,
                "_summary=count is for searches",
                code="value",
                expression=["_summary"],
            )
        self.elements = requested_elements(resource_type, ctx.query)

    def __call__(self, content: bytes | None) -> bytes | dict[str, Any] | None:
        if content is None or (self.summary in {None, "false"} and self.elements is None):
            return content  # stored bytes served as stored
        return subset(jsonio.loads(content), self.summary, self.elements)


def read(
    conn: Connection,
    ctx: RequestContext,
    resource_type: str,
    resource_id: str,
    if_none_match: int | None = None,
) -> Result:
    require(ctx.caller, resource_type, "r")
    shape = Shape(ctx, resource_type)
    stored = current_or_fail(conn, resource_type, resource_id, view=ctx.view)
    status = 304 if if_none_match == stored.version_id else 200
    return Result(
        status,
        shape(stored.content) if status == 200 else None,
        resource_type,
        resource_id,
        stored.version_id,
        stored.last_updated,
        patients=Result.owners(stored.compartment_patient_id),
    )


def vread(
    conn: Connection, ctx: RequestContext, resource_type: str, resource_id: str, version: str
) -> Result:
    require(ctx.caller, resource_type, "r")
    shape = Shape(ctx, resource_type)
    if not (version.isascii() and version.isdigit() and len(version) <= 9):
        raise FhirError.of(
            Category.NOT_FOUND, f"{resource_type}/{resource_id} has no version '{version[:64]}'"
        )
    stored = resources.read_version(conn, resource_type, resource_id, int(version))
    if stored is None or not visible_to(conn, ctx.view, resource_type, resource_id, stored):
        raise FhirError.of(
            Category.NOT_FOUND, f"{resource_type}/{resource_id} has no version {version}"
        )
    check_consent(conn, ctx.view, stored.compartment_patient_id)
    if stored.deleted:
        raise gone(stored)
    return Result(
        200,
        shape(stored.content),
        resource_type,
        resource_id,
        stored.version_id,
        stored.last_updated,
        patients=Result.owners(stored.compartment_patient_id),
    )
