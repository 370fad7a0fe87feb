"""Access policy (docs/architecture.md §9): the checks every interaction, bundle entry and
operation goes through. Pure decisions; the SQL form of visibility is built by
``storage`` from :class:`Visibility`.

- Scopes decide which actions on which types (``may``): anonymous callers get a
  401, callers without the scope a 403.
- A patient-bound token sees only its patient's compartment, plus resources of
  types that belong to no patient compartment (organisations, practitioners,
  medications...). Anything else is as absent as if it did not exist (404 on
  read, left out of searches, totals, includes and histories); writing it is 403.
"""

from __future__ import annotations

from collections.abc import Iterable

from ehr_service.fhir.compartment import Visibility
from ehr_service.fhir.errors import Category, FhirError
from ehr_service.security.caller import Caller
from ehr_service.security.consent import actors_of, permit_actors
from ehr_service.security.scopes import OPERATIONS_SCOPE
from ehr_service.security.tokens import missing_token

ACTION_NAMES = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}


def forbidden(message: str) -> FhirError:
    return FhirError.of(Category.FORBIDDEN, message, code="forbidden")


def require(caller: Caller, resource_type: str, action: str) -> None:
    """401 without a token, 403 without a scope granting ``action`` on the type."""
    if caller.internal:
        return
    if not caller.authenticated:
        raise missing_token()
    if not caller.may(resource_type, action):
        what = "all types" if resource_type == "*" else resource_type
        raise forbidden(f"The token's scopes do not allow {ACTION_NAMES[action]} on {what}")


def require_staff(caller: Caller, resource_type: str, action: str) -> None:
    """Organisation staff or systems only (not patient-bound tokens)."""
    require(caller, resource_type, action)
    if caller.patient is not None:
        raise forbidden("This operation is not available to patient-bound tokens")


def require_admin(caller: Caller) -> None:
    """System administration (merge, every resident's record): the ehr/sysadmin scope
    (or the deprecated ehr/admin), or a system/ token with write access to every type
    that names no other administrator role; never a patient-bound token (consent
    still applies inside)."""
    if caller.internal:
        return
    if not caller.authenticated:
        raise missing_token()
    if caller.patient is not None:
        raise forbidden("Administrative operations are not for patient-bound tokens")
    if caller.is_admin:
        return
    if caller.admin_role is None and caller.kind == "system" and caller.may("*", "u"):
        return
    raise forbidden(
        "This operation is system administration: it needs the ehr/sysadmin scope "
        "(or a system/ token with write access to every type)"
    )


def require_audit_reader(caller: Caller) -> None:
    """The audit trail (``GET /fhir/AuditEvent``): the audit administrator only
    (ehr/auditadmin, or the deprecated ehr/audit); the system and security
    administrators, whose acts it records, may not read it. A citizen sees the
    curated access log of the citizen API instead."""
    if caller.internal:
        return
    if not caller.authenticated:
        raise missing_token()
    if caller.patient is not None:
        raise forbidden(
            "Patient-bound tokens see who accessed the record at /citizen/v1/me/access-log"
        )
    if not caller.is_audit_admin:
        raise forbidden(
            "Reading the audit trail is audit administration: it needs the ehr/auditadmin "
            "scope (the system and security administrators may not read it)"
        )


def require_operator(caller: Caller) -> None:
    """The operations dashboard's figures: the ehr/operations (or ehr/sysadmin) scope;
    they are aggregates, never a resident's data, but not for patient-bound tokens."""
    if caller.internal:
        return
    if not caller.authenticated:
        raise missing_token()
    if caller.patient is not None:
        raise forbidden("The operations dashboard is not for patient-bound tokens")
    if OPERATIONS_SCOPE not in caller.scopes and not caller.is_admin:
        raise forbidden("The operations dashboard needs the ehr/operations or ehr/sysadmin scope")


def require_search(caller: Caller, types: Iterable[str]) -> None:
    """Every type a search touches (chain targets, _has sources) needs a search scope."""
    for resource_type in dict.fromkeys(types):
        require(caller, resource_type, "s")


def visibility(
    caller: Caller,
    member_types: frozenset[str],
    sharing_policy: str = "opt-out",
    home_region: str | None = None,
) -> Visibility:
    return Visibility(
        caller.patient,
        member_types if caller.patient is not None else frozenset(),
        actors_of(caller),
        permit_actors(caller, sharing_policy, home_region or ""),
    )


def can_see(view: Visibility, resource_type: str, owner: str | None) -> bool:
    return view.can_see(resource_type, owner)


def check_write(
    view: Visibility, resource_type: str, owner: str | None, patients: Iterable[str] = ()
) -> None:
    """A patient-bound token writes only into its own compartment, and never a
    resource that also points into someone else's."""
    if view.patient is not None and (
        owner != view.patient or any(p != view.patient for p in patients)
    ):
        raise forbidden(
            "A patient-bound token may only write resources of its own patient's record"
        )
