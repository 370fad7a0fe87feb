"""Consent (docs/architecture.md §9): a resident can refuse sharing of their record with the
partner region or with named organisations, through FHIR ``Consent`` resources.

An active Consent whose top-level ``provision.type`` is ``deny`` refuses each of
its ``provision.actor``s: ``Organization/<id>`` references, or regions named by
an identifier of system :data:`REGION_SYSTEM` (e.g. ``sichuan``). A deny whose
actors cannot be read, or that names none, refuses everyone who is subject to
consent (fail closed). Every caller is subject to consent but the resident's own
token and the service itself; a named refusal binds the callers whose token names
that organisation or region.
"""

from __future__ import annotations

from typing import Any

from ehr_service.fhir.errors import Category, FhirError
from ehr_service.fhir.references import parse_reference
from ehr_service.security.caller import Caller

REGION_SYSTEM = "urn:ehr-service:region"
EVERYONE = "*"
MAX_REGION_CHARS = 64
# An active permit is kept beside the refusals (consent_refusal) as ``permit:<actor>``:
# no caller's actors ever start so, so a permit never reads as a refusal.
PERMIT = "permit:"
# The lawful basis of each disclosure to another region (PIPL, 个人信息保护法), on the
# AuditEvent (purposeOfUse) and on the Provenance of what was received (reason).
LEGAL_BASIS_SYSTEM = "urn:ehr-service:legal-basis"
SEPARATE_CONSENT = {
    "system": LEGAL_BASIS_SYSTEM,
    "code": "pipl-separate-consent",
    "display": "The resident's separate consent (PIPL art. 23 and 29)",
}
OTHER_BASIS = {
    "system": LEGAL_BASIS_SYSTEM,
    "code": "pipl-other-basis",
    "display": "Another lawful basis (PIPL art. 13: treatment and public health; "
    "the resident may refuse)",
}


def legal_basis(policy: str) -> dict[str, str]:
    """The basis a deployment's sharing policy discloses on (EHR_SHARING_POLICY)."""
    return dict(SEPARATE_CONSENT if policy == "consent-required" else OTHER_BASIS)


def permit_actors(caller: Caller, policy: str, home_region: str) -> tuple[str, ...]:
    """Under ``consent-required``, what a resident's permit must name for a caller of
    another region to see their record (empty: no permit needed)."""
    if policy != "consent-required" or caller.internal or caller.patient is not None:
        return ()
    if caller.region is None or caller.region == home_region:
        return ()
    return (f"{PERMIT}region:{caller.region}",)


def permits(consent: dict[str, Any]) -> tuple[str, ...]:
    """The ``permit:`` actors of an active Consent whose top-level provision permits
    named regions or organisations (nothing for any other Consent)."""
    provision = consent.get("provision")
    if consent.get("status") != "active" or not isinstance(provision, dict):
        return ()
    if provision.get("type") != "permit":
        return ()
    actors: list[str] = []
    for actor in provision.get("actor") or ():
        reference = actor.get("reference") if isinstance(actor, dict) else None
        if not isinstance(reference, dict):
            continue  # a permit we cannot read permits nothing (fail closed)
        literal = parse_reference(str(reference.get("reference", "")))
        identifier = reference.get("identifier")
        if literal is not None and literal.resource_type == "Organization":
            actors.append(f"{PERMIT}Organization/{literal.resource_id}")
        elif isinstance(identifier, dict) and identifier.get("system") == REGION_SYSTEM:
            region = str(identifier.get("value"))
            if 0 < len(region) <= MAX_REGION_CHARS:
                actors.append(f"{PERMIT}region:{region}")
    return tuple(dict.fromkeys(actors))


def refusals(consent: dict[str, Any]) -> tuple[str | None, tuple[str, ...]]:
    """(patient id, refused actors) of a Consent; no actors when it refuses nothing."""
    patient_ref = (consent.get("patient") or {}).get("reference")
    parsed = parse_reference(patient_ref) if isinstance(patient_ref, str) else None
    patient = parsed.resource_id if parsed and parsed.resource_type == "Patient" else None
    provision = consent.get("provision")
    if consent.get("status") != "active" or not isinstance(provision, dict):
        return patient, ()
    if provision.get("type") != "deny":
        return patient, ()
    actors: list[str] = []
    for index, actor in enumerate(provision.get("actor") or ()):
        reference = actor.get("reference") if isinstance(actor, dict) else None
        if not isinstance(reference, dict):
            return patient, (EVERYONE,)
        literal = parse_reference(str(reference.get("reference", "")))
        identifier = reference.get("identifier")
        if literal is not None and literal.resource_type == "Organization":
            actors.append(f"Organization/{literal.resource_id}")
        elif isinstance(identifier, dict) and identifier.get("system") == REGION_SYSTEM:
            region = str(identifier.get("value"))
            if len(region) > MAX_REGION_CHARS:
                raise FhirError.of(
                    Category.INCORRECT,
                    f"A region code is at most {MAX_REGION_CHARS} characters",
                    code="value",
                    expression=[f"Consent.provision.actor[{index}].reference.identifier.value"],
                )
            actors.append(f"region:{region}")
        else:
            return patient, (EVERYONE,)  # an actor we cannot evaluate: refuse everyone
    return patient, tuple(dict.fromkeys(actors)) or (EVERYONE,)


def actors_of(caller: Caller) -> tuple[str, ...]:
    """What a refusal may name about this caller; empty: consent does not apply."""
    if caller.internal or caller.patient is not None:
        return ()
    names = []
    if caller.organization:
        org = caller.organization
        names.append(org if org.startswith("Organization/") else f"Organization/{org}")
    if caller.region:
        names.append(f"region:{caller.region}")
    return (*names, EVERYONE)  # a refusal of everyone binds every staff and system caller
