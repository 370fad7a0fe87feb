"""``Patient/$merge`` (the FHIR R5 Patient merge operation, offered on R4).

One transaction: every resource of the source's record (owned by it, or referring
to it) is re-pointed to the target as a new version; the source becomes inactive
with ``link`` ``replaced-by`` and hands its resident ID number to the target; the
target gains ``link`` ``replaces``; a Provenance records the merge. With
``preview`` the same work runs inside a savepoint that is rolled back, so the
report is exactly what a real merge would do and nothing changes.

Two records with different resident ID numbers are two residents: refused.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson
from sqlalchemy import Connection

from ehr_service.fhir import jsonio
from ehr_service.fhir.errors import Category, FhirError
from ehr_service.fhir.parameters import OperationInput
from ehr_service.fhir.primitives import format_instant, utc_now
from ehr_service.fhir.references import parse_reference
from ehr_service.fhir.validation import validate_resource
from ehr_service.interactions import conditional
from ehr_service.interactions.context import RequestContext
from ehr_service.interactions.create import prepare_create
from ehr_service.interactions.match import replaced
from ehr_service.interactions.read import current_or_fail
from ehr_service.interactions.results import Result
from ehr_service.interactions.update import store_next_version
from ehr_service.mpi.idnumber import ID_NUMBER_SYSTEM
from ehr_service.mpi.matching import person_of
from ehr_service.security.policy import require_admin
from ehr_service.storage import identity as identity_store
from ehr_service.storage import resources
from ehr_service.storage.unit_of_work import savepoint

# Records about records keep pointing at what they described.
_NOT_REPOINTED = {"Provenance", "AuditEvent"}
LIFECYCLE = "http://terminology.hl7.org/CodeSystem/iso-21089-lifecycle"
MAX_IDENTIFIERS = 20


def _unprocessable(message: str, code: str = "business-rule") -> FhirError:
    return FhirError.of(Category.UNPROCESSABLE, message, code=code)


def _resolve(conn: Connection, ctx: RequestContext, params: OperationInput, role: str) -> str:
    """The Patient named by ``<role>-patient`` and/or ``<role>-patient-identifier``."""
    found: set[str] = set()
    reference = params.value(f"{role}-patient", "Reference")
    if reference is not None:
        literal = reference.get("reference") if isinstance(reference, dict) else None
        parsed = parse_reference(literal) if isinstance(literal, str) else None
        if (
            parsed is None
            or parsed.resource_type != "Patient"
            or parsed.version_id is not None
            or parsed.base not in {None, ctx.base_url}
        ):
            raise FhirError.of(
                Category.INCORRECT,
                f"{role}-patient must reference a Patient of this server (Patient/<id>)",
                expression=[f"{role}-patient"],
            )
        found.add(parsed.resource_id)
    identifiers = [p.get("valueIdentifier") for p in params.all(f"{role}-patient-identifier")]
    if len(identifiers) > MAX_IDENTIFIERS:
        raise FhirError.of(
            Category.INCORRECT,
            f"At most {MAX_IDENTIFIERS} {role}-patient-identifier parts",
            expression=[f"{role}-patient-identifier"],
        )
    if identifiers:
        criteria = []
        for identifier in identifiers:
            if (
                not isinstance(identifier, dict)
                or not isinstance(identifier.get("value"), str)
                or not isinstance(identifier.get("system", ""), str)
            ):
                raise FhirError.of(
                    Category.INCORRECT,
                    f"{role}-patient-identifier must be an Identifier with a value",
                    expression=[f"{role}-patient-identifier"],
                )
            system = identifier.get("system")
            value = identifier["value"].replace("|", "\\|").replace(",", "\\,")
            criteria.append(f"{system}|{value}" if isinstance(system, str) else value)
        ids = conditional.matching_ids(conn, ctx, "Patient", {"identifier": criteria}, limit=2)
        if len(ids) != 1:
            raise _unprocessable(
                f"{role}-patient-identifier matches {'no' if not ids else 'more than one'} Patient",
                "not-found" if not ids else "multiple-matches",
            )
        found.add(ids[0])
    if not found:
        raise FhirError.of(
            Category.INCORRECT,
            f"$merge needs {role}-patient or {role}-patient-identifier",
            code="required",
        )
    if len(found) > 1:
        raise _unprocessable(
            f"{role}-patient and {role}-patient-identifier name different Patients"
        )
    return found.pop()


def _repoint(node: Any, source: str, target: str, base_url: str) -> int:
    """Point every reference to ``Patient/source`` at ``Patient/target``, in place."""
    changed = 0
    if isinstance(node, dict):
        value = node.get("reference")
        if isinstance(value, str):
            parsed = parse_reference(value)
            if (
                parsed is not None
                and parsed.resource_type == "Patient"
                and parsed.resource_id == source
                and parsed.base in {None, base_url}
            ):
                node["reference"] = f"Patient/{target}"
                changed += 1
        for item in node.values():
            if isinstance(item, dict | list):
                changed += _repoint(item, source, target, base_url)
    elif isinstance(node, list):
        for item in node:
            changed += _repoint(item, source, target, base_url)
    return changed


def _link(resource: dict[str, Any], other: str, link_type: str) -> None:
    links = [
        link
        for link in resource.get("link") or ()
        if not (isinstance(link, dict) and (link.get("other") or {}).get("reference") == other)
    ]
    links.append({"other": {"reference": other}, "type": link_type})
    resource["link"] = links


def _is_id_number(identifier: Any) -> bool:
    return isinstance(identifier, dict) and identifier.get("system") == ID_NUMBER_SYSTEM


class _Preview(Exception):  # noqa: N818 - control flow, not an error
    """Raised inside the savepoint of a preview to undo it."""


def merge(conn: Connection, ctx: RequestContext, body: Any) -> Result:
    require_admin(ctx.caller)
    params = OperationInput(body, "$merge")
    preview = params.boolean("preview", default=False)
    source_id = _resolve(conn, ctx, params, "source")
    target_id = _resolve(conn, ctx, params, "target")
    if source_id == target_id:
        raise _unprocessable("The source and target are the same Patient")
    result_patient = params.resource("result-patient", "Patient")
    if result_patient is not None:
        if result_patient.get("id") != target_id:
            raise _unprocessable(
                "result-patient must carry the id of the target Patient", "invalid"
            )
        validate_resource(result_patient, expected_type="Patient")
    output: dict[str, Any] = {}
    try:
        with savepoint(conn):
            output = _merge(conn, ctx, source_id, target_id, result_patient, preview=preview)
            if preview:
                raise _Preview
    except _Preview:
        pass  # a preview: everything it did was rolled back with the savepoint
    output["parameter"].insert(0, {"name": "input", "resource": body})
    return Result(200, output, patients=Result.owners(source_id, target_id))


def _merge(
    conn: Connection,
    ctx: RequestContext,
    source_id: str,
    target_id: str,
    result_patient: dict[str, Any] | None,
    *,
    preview: bool,
) -> dict[str, Any]:
    protection = ctx.services.identity.protection
    # Lock the two records in id order: opposing merges must not deadlock.
    locked = {
        pid: current_or_fail(conn, "Patient", pid, for_update=True, view=ctx.view)
        for pid in sorted((source_id, target_id))
    }
    source, target = locked[source_id], locked[target_id]
    source_doc = protection.reveal(jsonio.loads(source.content or b"{}"))
    target_doc = protection.reveal(jsonio.loads(target.content or b"{}"))
    if replaced(source_doc):
        raise _unprocessable(f"Patient/{source_id} was already merged into another record")
    if replaced(target_doc):
        raise _unprocessable(f"Patient/{target_id} was merged into another record; merge into that")
    numbers = person_of(source_doc).id_numbers | person_of(target_doc).id_numbers
    if result_patient is not None:
        numbers |= person_of(result_patient).id_numbers
    if len(numbers) > 1:
        raise _unprocessable(
            "The two records carry different resident ID numbers: they are two residents"
        )

    moved: Counter[str] = Counter()
    for resource_type, resource_id in identity_store.patient_record_members(conn, source_id):
        if resource_type in _NOT_REPOINTED or (resource_type, resource_id) == (
            "Patient",
            target_id,
        ):
            continue  # the target's own links are rewritten below
        stored = resources.read_current(conn, resource_type, resource_id, for_update=True)
        if stored is None or stored.deleted or stored.content is None:
            continue
        document = protection.reveal(jsonio.loads(stored.content))
        if _repoint(document, source_id, target_id, ctx.base_url):
            store_next_version(conn, ctx, stored, document, method="PUT")
            moved[resource_type] += 1

    # The source hands its ID number over first: the number is unique to one record.
    number_identifiers = [i for i in source_doc.get("identifier") or () if _is_id_number(i)]
    source_doc["identifier"] = [
        i for i in source_doc.get("identifier") or () if not _is_id_number(i)
    ]
    if not source_doc["identifier"]:
        del source_doc["identifier"]
    source_doc["active"] = False
    _link(source_doc, f"Patient/{target_id}", "replaced-by")
    source_result = store_next_version(conn, ctx, source, source_doc, method="PUT")

    target_new = _target_document(ctx, source_doc, target_doc, result_patient, number_identifiers)
    _link(target_new, f"Patient/{source_id}", "replaces")
    target_result = store_next_version(conn, ctx, target, target_new, method="PUT")

    provenance = _provenance(
        ctx, source_result.version_id, target_result.version_id, source_id, target_id
    )
    resources.insert_new(conn, [prepare_create(conn, ctx, "Provenance", provenance)])

    summary = ", ".join(f"{n} {t}" for t, n in sorted(moved.items())) or "no other resources"
    verb = "would be" if preview else "were"
    issues = [
        {
            "severity": "information",
            "code": "informational",
            "diagnostics": f"Patient/{source_id} {'would be' if preview else 'was'} merged into "
            f"Patient/{target_id}; {summary} {verb} re-pointed to it",
        }
    ]
    if preview:
        issues.append(
            {
                "severity": "information",
                "code": "informational",
                "diagnostics": "Preview only: nothing was changed",
            }
        )
    assert isinstance(target_result.body, bytes)
    return {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "outcome", "resource": {"resourceType": "OperationOutcome", "issue": issues}},
            {"name": "result", "resource": orjson.Fragment(target_result.body)},
        ],
    }


def _target_document(
    ctx: RequestContext,
    source_doc: dict[str, Any],
    target_doc: dict[str, Any],
    result_patient: dict[str, Any] | None,
    number_identifiers: list[Any],
) -> dict[str, Any]:
    server_systems = ctx.services.identity.server_systems
    if result_patient is not None:
        target_new = dict(result_patient)
    else:
        target_new = dict(target_doc)
        present = {
            (i.get("system"), i.get("value"))
            for i in target_new.get("identifier") or ()
            if isinstance(i, dict)
        }
        for identifier in source_doc.get("identifier") or ():
            key = (identifier.get("system"), identifier.get("value"))
            if identifier.get("system") not in server_systems and key not in present:
                target_new.setdefault("identifier", []).append({**identifier, "use": "old"})
    identifiers = list(target_new.get("identifier") or ())
    if number_identifiers and not any(_is_id_number(i) for i in identifiers):
        identifiers.extend(number_identifiers)
    if identifiers:
        target_new["identifier"] = identifiers
    return target_new


def _provenance(
    ctx: RequestContext,
    source_version: int | None,
    target_version: int | None,
    source_id: str,
    target_id: str,
) -> dict[str, Any]:
    return {
        "resourceType": "Provenance",
        "target": [
            {"reference": f"Patient/{target_id}/_history/{target_version}"},
            {"reference": f"Patient/{source_id}/_history/{source_version}"},
        ],
        "recorded": format_instant(utc_now()),
        "activity": {
            "coding": [
                {"system": LIFECYCLE, "code": "merge", "display": "Merge Record Lifecycle Event"}
            ]
        },
        "agent": [
            {
                "type": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                            "code": "performer",
                        }
                    ]
                },
                "who": {"display": ctx.caller.subject},
            }
        ],
    }
