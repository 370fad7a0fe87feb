"""The reference rule of patient-bound tokens (docs/architecture.md §9): what a citizen's
token writes may point only at what that token can see.

A patient-bound token writes into its own record only; this rule closes the
other way out: a reference from its record into someone else's (``Patient.link``
to another resident, an Observation's ``focus``, ``hasMember`` or
``derivedFrom``, any reference element). The target must be a live resource the
token can see, or one the same transaction creates. An unknown target and
another resident's answer the same 403, so the answer reveals nothing.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import Connection

from ehr_service.fhir.compartment import Visibility
from ehr_service.fhir.references import parse_reference, reference_values
from ehr_service.security.policy import can_see, forbidden
from ehr_service.storage import resources
from ehr_service.storage.search_sql import refers_to_another_patient

# ``Type/id`` of what the current transaction Bundle creates (a transaction cache):
# references to them are to the caller's own record even before they are stored.
PENDING_IDENTITIES = "pending-identities"


def check_patient_references(
    conn: Connection,
    view: Visibility,
    resource: dict[str, Any],
    base_url: str,
    pending: Collection[str] = (),
) -> None:
    """403 unless every local reference of ``resource`` is to something ``view``
    sees; ``pending`` are ``Type/id`` the same transaction creates."""
    if view.patient is None:
        return
    own = f"{resource.get('resourceType')}/{resource.get('id')}"
    for value in dict.fromkeys(reference_values(resource)):
        if value.startswith("#"):  # a contained resource: checked as part of this one
            continue
        parsed = parse_reference(value)
        if parsed is None or (parsed.base is not None and parsed.base != base_url):
            continue  # not a resource of this server
        if parsed.relative == own or parsed.relative in pending:
            continue
        if not _visible(conn, view, parsed.resource_type, parsed.resource_id):
            raise forbidden(
                f"The reference '{value[:100]}' is not to a resource of this token's record"
            )


def _visible(conn: Connection, view: Visibility, resource_type: str, resource_id: str) -> bool:
    assert view.patient is not None
    stored = resources.read_current(conn, resource_type, resource_id)
    if stored is None or stored.deleted:
        return False
    if not can_see(view, resource_type, stored.compartment_patient_id):
        return False
    if stored.compartment_patient_id is not None:
        return True
    return not refers_to_another_patient(conn, resource_type, resource_id, view.patient)
