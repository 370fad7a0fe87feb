"""``Patient/$match`` (R4 operation, IHE PDQm): find the records of one person.

Candidates come from the indexes (the blind token of an ID number; else the same
birth date or phone number; else the same name), are scored by
:mod:`ehr_service.mpi.matching` and returned best first as a ``searchset``
Bundle with ``search.score`` and the ``match-grade`` extension.
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import Connection

from ehr_service.fhir import jsonio
from ehr_service.fhir.errors import Category, FhirError
from ehr_service.fhir.parameters import OperationInput
from ehr_service.fhir.primitives import date_range, format_instant, new_id, utc_now
from ehr_service.fhir.search.values import normalise
from ehr_service.fhir.validation import validate_resource
from ehr_service.interactions.context import RequestContext
from ehr_service.interactions.results import Result
from ehr_service.mpi.matching import Person, person_of, score
from ehr_service.security.policy import require_staff
from ehr_service.storage import consent as consent_store
from ehr_service.storage import identity as identity_store
from ehr_service.storage import resources

MATCH_GRADE_URL = "http://hl7.org/fhir/StructureDefinition/match-grade"
DEFAULT_COUNT = 10
MAX_CANDIDATES = 500


def _count(params: OperationInput, ceiling: int) -> int:
    value = params.value("count", "Integer")
    if value is None:
        return min(DEFAULT_COUNT, ceiling)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise FhirError.of(
            Category.INCORRECT, "$match: count must be a positive integer", expression=["count"]
        )
    return min(value, ceiling)


def replaced(resource: dict[str, Any]) -> bool:
    """A record merged into another (``link`` of type ``replaced-by``)."""
    return any(
        isinstance(link, dict) and link.get("type") == "replaced-by"
        for link in resource.get("link") or ()
    )


def _candidates(conn: Connection, ctx: RequestContext, query: dict[str, Any]) -> list[str]:
    protection = ctx.services.identity.protection
    person = person_of(query)
    found: list[str] = []
    for number in person.id_numbers:
        holder = identity_store.id_number_holder(conn, protection.blind_tokens(number))
        if holder is not None:
            found.append(holder)
    birth = date_range(person.birth_date) if person.birth_date else None
    phones = {
        t["value"]
        for t in query.get("telecom") or ()
        if isinstance(t, dict) and isinstance(t.get("value"), str)
    } | person.phones
    names: set[str] = set()
    if birth is None and not phones:  # names alone are a wide net: only as a last resort
        for name in query.get("name") or ():
            if isinstance(name, dict) and isinstance(name.get("family"), str):
                names.add(normalise(name["family"]))
    found.extend(
        identity_store.match_candidates(
            conn, birth_range=birth, phones=phones, names=names, limit=MAX_CANDIDATES
        )
    )
    return list(dict.fromkeys(found))


def match(conn: Connection, ctx: RequestContext, body: Any) -> Result:
    require_staff(ctx.caller, "Patient", "s")
    params = OperationInput(body, "$match")
    query = params.resource("resource", "Patient")
    if query is None:
        raise FhirError.of(
            Category.INCORRECT, "$match needs a 'resource' (the Patient to match)", code="required"
        )
    validate_resource(query, expected_type="Patient")
    only_certain = params.boolean("onlyCertainMatches", default=False)
    count = _count(params, ctx.settings.max_page_size)
    protection = ctx.services.identity.protection
    wanted: Person = person_of(query)
    candidates = _candidates(conn, ctx, query)
    refused = consent_store.refused_patients(conn, candidates, ctx.view.refused_actors)
    if ctx.view.permit_actors:  # consent-required: only residents who consented
        permitted = consent_store.permitted_patients(conn, candidates, ctx.view.permit_actors)
        refused |= set(candidates) - permitted
    contents = resources.live_contents(conn, "Patient", [c for c in candidates if c not in refused])
    scored: list[tuple[float, str, str, bytes]] = []
    for patient_id, content in contents.items():
        candidate = protection.reveal(jsonio.loads(content))
        if replaced(candidate):
            continue  # merged away: its replacement is the record to use
        value, grade = score(wanted, person_of(candidate))
        if grade == "certainly-not" or (only_certain and grade != "certain"):
            continue
        scored.append((value, grade, patient_id, content))
    scored.sort(key=lambda s: (-s[0], s[2]))
    entries = [
        {
            "fullUrl": f"{ctx.base_url}/Patient/{patient_id}",
            "resource": orjson.Fragment(content),
            "search": {
                "extension": [{"url": MATCH_GRADE_URL, "valueCode": grade}],
                "mode": "match",
                "score": value,
            },
        }
        for value, grade, patient_id, content in scored[:count]
    ]
    bundle = {
        "resourceType": "Bundle",
        "id": new_id(),
        "meta": {"lastUpdated": format_instant(utc_now())},
        "type": "searchset",
        "total": len(entries),
        "entry": entries,
    }
    returned = (patient_id for _, _, patient_id, _ in scored[:count])
    return Result(200, bundle, patients=Result.owners(*returned))
