"""``Patient/$ihe-pix`` (IHE PIXm): the identifiers one resident has in other domains.

``sourceIdentifier`` (``system|value``) names a resident in one domain (a
hospital's record numbers, the partner region's identifiers, the resident ID
number, our lifelong record number); the answer lists the resident's identifiers
in the other domains (or only ``targetSystem``) and the Patient's id. A record
merged away answers with the record that replaced it. Following PIXm: an unknown
source domain is a 400, an unknown resident a 404, an unknown target domain a 403.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from ehr_service.fhir import jsonio
from ehr_service.fhir.errors import Category, FhirError
from ehr_service.fhir.search.query import split_token
from ehr_service.interactions import conditional
from ehr_service.interactions.context import RequestContext
from ehr_service.interactions.results import Result
from ehr_service.mpi.protection import is_sealed
from ehr_service.security.policy import require_staff
from ehr_service.storage import consent as consent_store
from ehr_service.storage import identity as identity_store
from ehr_service.storage import resources


def _patients(conn: Connection, ctx: RequestContext, source: str) -> list[dict[str, Any]]:
    """The residents with this identifier, as stored (ID numbers sealed)."""
    # One identifier (PIXm): a comma is part of the value, not a search OR.
    single = source.replace("\\,", ",").replace(",", "\\,")
    ids = conditional.matching_ids(conn, ctx, "Patient", {"identifier": [single]}, limit=10)
    contents = resources.live_contents(conn, "Patient", ids)
    out = []
    for content in contents.values():
        patient = jsonio.loads(content)
        for link in patient.get("link") or ():  # merged away: answer with the survivor
            if link.get("type") == "replaced-by":
                other = str((link.get("other") or {}).get("reference", ""))
                survivor = resources.live_contents(
                    conn, "Patient", [other.removeprefix("Patient/")]
                )
                for survivor_content in survivor.values():
                    patient = jsonio.loads(survivor_content)
        out.append(patient)
    return out


def ihe_pix(
    conn: Connection, ctx: RequestContext, source: str | None, targets: list[str]
) -> Result:
    require_staff(ctx.caller, "Patient", "r")
    if not source:
        raise FhirError.of(
            Category.INCORRECT,
            "$ihe-pix needs sourceIdentifier=system|value",
            code="required",
            expression=["sourceIdentifier"],
        )
    system, value = split_token(source)
    if not system or not value:
        raise FhirError.of(
            Category.INCORRECT,
            "sourceIdentifier must be system|value",
            code="value",
            expression=["sourceIdentifier"],
        )
    patients = _patients(conn, ctx, source)
    refused = consent_store.refused_patients(
        conn, [str(p.get("id")) for p in patients], ctx.view.refused_actors
    )
    if ctx.view.permit_actors:  # consent-required: only residents who consented
        named = [str(p.get("id")) for p in patients]
        refused |= set(named) - consent_store.permitted_patients(
            conn, named, ctx.view.permit_actors
        )
    patients = [p for p in patients if p.get("id") not in refused]
    if not patients:
        if not identity_store.known_identifier_system(conn, system):
            raise FhirError.of(
                Category.INCORRECT,
                "sourceIdentifier Assigning Authority not found",
                code="code-invalid",
                expression=["sourceIdentifier"],
            )
        raise FhirError.of(Category.NOT_FOUND, "No resident has this sourceIdentifier")
    protection = ctx.services.identity.protection
    reveal = ctx.caller.sees_id_numbers
    parameters: list[dict[str, Any]] = []
    for patient in patients:
        sealed = [id(i) for i in patient.get("identifier") or () if is_sealed(i)]
        if reveal:
            protection.reveal(patient)
        for identifier in patient.get("identifier") or ():
            other = identifier.get("system")
            if other == system or (targets and other not in targets):
                continue
            if id(identifier) in sealed and not reveal:
                continue  # an ID number: only for callers allowed to see it
            parameters.append({"name": "targetIdentifier", "valueIdentifier": identifier})
        parameters.append(
            {"name": "targetId", "valueReference": {"reference": f"Patient/{patient['id']}"}}
        )
    if (
        targets
        and not any(p["name"] == "targetIdentifier" for p in parameters)
        and not any(identity_store.known_identifier_system(conn, t) for t in targets)
    ):
        raise FhirError.of(
            Category.FORBIDDEN,
            "targetSystem is not a domain this service knows",
            code="code-invalid",
            expression=["targetSystem"],
        )
    ids = (str(p.get("id")) for p in patients)
    return Result(
        200, {"resourceType": "Parameters", "parameter": parameters}, patients=Result.owners(*ids)
    )
