"""The citizen mini-program backend (``/citizen/v1``): one resident's own data, as
plain JSON, for a patient-bound token. Everything goes through the same access
rules as FHIR requests (the token's compartment, masked ID numbers)."""

from __future__ import annotations

import base64
from dataclasses import replace
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs

from sqlalchemy import Connection

from ehr_service.fhir import jsonio
from ehr_service.fhir.errors import Category, FhirError
from ehr_service.fhir.names import display_name
from ehr_service.interactions import create, update
from ehr_service.interactions.context import RequestContext
from ehr_service.interactions.paging import first_value
from ehr_service.interactions.read import current_or_fail
from ehr_service.interactions.results import Result
from ehr_service.mpi.health_card import SCENES
from ehr_service.mpi.idnumber import ID_NUMBER_SYSTEM
from ehr_service.recognition.marks import MARK_SYSTEM
from ehr_service.security.caller import SERVICE
from ehr_service.security.consent import LEGAL_BASIS_SYSTEM, REGION_SYSTEM, refusals
from ehr_service.security.policy import require
from ehr_service.storage import audit as audit_store
from ehr_service.storage import search_queries

RESULT_TYPES = ("Observation", "DiagnosticReport", "ImagingStudy")
PURPOSES = {
    "TREAT": "treatment",
    "ETREAT": "emergency treatment",
    "HPAYMT": "payment",
    "HRESCH": "research",
    "PUBHLTH": "public health",
    "PATRQT": "your own request",
}
MAX_LIMIT = 100


def patient_of(ctx: RequestContext, resource_type: str = "Patient", action: str = "r") -> str:
    """The token's patient; its scopes must allow ``action`` on ``resource_type``."""
    require(ctx.caller, resource_type, action)
    if ctx.caller.patient is None:
        raise FhirError.of(
            Category.FORBIDDEN, "The citizen API needs a patient-bound token", code="forbidden"
        )
    return ctx.caller.patient


def _limit(ctx: RequestContext) -> int:
    raw = (ctx.query.get("limit") or ["20"])[0]
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 3) or not 1 <= int(raw) <= MAX_LIMIT:
        raise FhirError.of(Category.INCORRECT, f"limit must be 1..{MAX_LIMIT}", code="value")
    return int(raw)


def _text(concept: Any) -> str | None:
    if not isinstance(concept, dict):
        return None
    if isinstance(concept.get("text"), str):
        return str(concept["text"])
    for coding in concept.get("coding") or ():
        if isinstance(coding, dict) and (coding.get("display") or coding.get("code")):
            return str(coding.get("display") or coding.get("code"))
    return None


def me(conn: Connection, ctx: RequestContext) -> Result:
    patient_id = patient_of(ctx)
    stored = current_or_fail(conn, "Patient", patient_id, view=ctx.view)
    resource = jsonio.loads(stored.content or b"{}")  # stored form: ID numbers masked
    identifiers = resource.get("identifier") or []
    record_system = ctx.services.identity.record_system
    body = {
        "id": patient_id,
        "name": display_name(resource.get("name")),
        "gender": resource.get("gender"),
        "birthDate": resource.get("birthDate"),
        "idNumber": next(
            (i.get("value") for i in identifiers if i.get("system") == ID_NUMBER_SYSTEM), None
        ),
        "recordNumber": next(
            (i.get("value") for i in identifiers if i.get("system") == record_system), None
        ),
        "deceased": bool(resource.get("deceasedDateTime") or resource.get("deceasedBoolean")),
    }
    return Result(200, body, patients=frozenset({patient_id}))


def _result_item(resource: dict[str, Any]) -> dict[str, Any]:
    kind = resource["resourceType"]
    when = (
        resource.get("effectiveDateTime")
        or resource.get("issued")
        or resource.get("started")
        or (resource.get("effectivePeriod") or {}).get("start")
    )
    item: dict[str, Any] = {
        "resourceType": kind,
        "id": resource.get("id"),
        "category": "imaging"
        if kind == "ImagingStudy" or "imaging" in str(resource.get("category"))
        else "laboratory",
        "name": _text(resource.get("code")) or resource.get("description"),
        "date": when,
        "status": resource.get("status"),
        "recognition": {  # mutual recognition (docs/architecture.md §7)
            "mark": next(
                (
                    t.get("code")
                    for t in (resource.get("meta") or {}).get("tag") or ()
                    if isinstance(t, dict) and t.get("system") == MARK_SYSTEM
                ),
                None,
            ),
            "reusedBy": [],  # the decisions that reused it instead of a re-test
        },
    }
    quantity = resource.get("valueQuantity")
    if isinstance(quantity, dict):
        item["value"], item["unit"] = quantity.get("value"), quantity.get("unit")
    elif "valueString" in resource:
        item["value"] = resource["valueString"]
    return item


def _reuses(conn: Connection, patient_id: str) -> dict[str, list[dict[str, Any]]]:
    """Result reference -> the accepted recognition decisions (Tasks) that reused it."""
    out: dict[str, list[dict[str, Any]]] = {}
    after: tuple[str, str] | None = None
    while True:
        page = search_queries.compartment_page(
            conn, patient_id, types=["Task"], since=None, after=after, limit=500
        )
        for found in page:
            task = jsonio.loads(found.content)
            codes = [
                c.get("code")
                for c in (task.get("code") or {}).get("coding") or ()
                if isinstance(c, dict) and c.get("system") == "urn:ehr-service:recognition-decision"
            ]
            if "accepted" not in codes:
                continue
            for part in task.get("input") or ():
                reference = (part.get("valueReference") or {}).get("reference")
                if isinstance(reference, str):
                    out.setdefault(reference, []).append(
                        {"task": task.get("id"), "date": task.get("authoredOn"),
                         "requester": (task.get("requester") or {}).get("reference")}
                    )  # fmt: skip
        if len(page) < 500:
            return out
        after = (page[-1].resource_type, page[-1].resource_id)


def _moment(item: dict[str, Any]) -> str:
    return str(item.get("date") or "")


def results(conn: Connection, ctx: RequestContext) -> Result:
    """Laboratory and imaging results, newest first (``limit``, ``before`` a date)."""
    patient_id = patient_of(ctx, "Observation")
    current_or_fail(conn, "Patient", patient_id, view=ctx.view)
    limit = _limit(ctx)
    before = first_value(ctx.query, "before")
    items: list[dict[str, Any]] = []
    after: tuple[str, str] | None = None
    while True:
        page = search_queries.compartment_page(
            conn, patient_id, types=list(RESULT_TYPES), since=None, after=after, limit=500
        )
        items.extend(_result_item(jsonio.loads(f.content)) for f in page)
        if len(page) < 500:
            break
        after = (page[-1].resource_type, page[-1].resource_id)
    reused = _reuses(conn, patient_id)
    for item in items:
        item["recognition"]["reusedBy"] = reused.get(f"{item['resourceType']}/{item['id']}", [])
    if before:
        items = [i for i in items if _moment(i) < before]
    items.sort(key=lambda i: (_moment(i), i["id"]), reverse=True)
    shown = items[:limit]
    body: dict[str, Any] = {"items": shown}
    if len(items) > limit and shown:
        body["next"] = {"before": _moment(shown[-1])}
    return Result(200, body, patients=frozenset({patient_id}))


def access_log(conn: Connection, ctx: RequestContext) -> Result:
    """Who accessed my record: when, which organisation, what kind of data, why.
    Never staff ids, addresses or queries; the resident's own accesses are left out."""
    patient_id = patient_of(ctx)
    limit = _limit(ctx)
    raw_before = first_value(ctx.query, "before")
    before = None
    if raw_before is not None:
        if not (raw_before.isascii() and raw_before.isdigit() and len(raw_before) <= 18):
            raise FhirError.of(Category.INCORRECT, "before must be an event number", code="value")
        before = int(raw_before)
    events = audit_store.access_log(conn, patient_id, before=before, limit=limit * 3)
    organizations = _organization_names(conn, events)
    items = []
    for event in events:
        content = jsonio.loads(event.content)
        agent = (content.get("agent") or [{}])[0]
        role = ((agent.get("role") or [{}])[0]).get("text")
        if role == "patient":
            continue  # the resident's own use of the app (a patient token sees no other record)
        kinds = sorted(_data_kinds(content.get("entity") or ()) - {"Patient"})
        purpose = ((agent.get("purposeOfUse") or [{}])[0].get("coding") or [{}])[0].get("code")
        items.append(
            {
                "id": event.seq,
                "when": event.recorded.isoformat(),
                "organization": organizations.get(event.organization or "", event.organization),
                "action": (content.get("subtype") or [{}])[0].get("code", event.kind),
                "data": kinds or ["Patient"],
                "purpose": PURPOSES.get(str(purpose), "other"),
                "allowed": event.outcome == "0",
                "legalBasis": _legal_basis(content),  # a disclosure to another region
            }
        )
        scene = _card_scene(content)
        if scene is not None:  # my e-health card was presented, and what for
            items[-1]["healthCard"] = {"scene": scene, "text": SCENES.get(scene, scene)}
        if len(items) == limit:
            break
    body: dict[str, Any] = {"items": items}
    if len(items) == limit:
        body["next"] = {"before": items[-1]["id"]}
    return Result(200, body)


def _card_scene(content: dict[str, Any]) -> str | None:
    """The scene code of an e-health card use (its event's query entity), or None."""
    if ((content.get("subtype") or [{}])[0]).get("code") != "health-card-use":
        return None
    for entity in content.get("entity") or ():
        if isinstance(entity, dict) and isinstance(entity.get("query"), str):
            query = parse_qs(base64.b64decode(entity["query"]).decode("utf-8", "replace"))
            scenes = query.get("scene") or []
            return scenes[0] if scenes else None
    return None


def _legal_basis(content: dict[str, Any]) -> dict[str, str] | None:
    """The lawful basis an event records for a disclosure (PIPL), or None."""
    for concept in content.get("purposeOfUse") or ():
        for coding in (concept or {}).get("coding") or ():
            if isinstance(coding, dict) and coding.get("system") == LEGAL_BASIS_SYSTEM:
                return {"code": str(coding.get("code")), "text": str(coding.get("display"))}
    return None


def _data_kinds(entities: Any) -> set[str]:
    kinds = set()
    for entity in entities:
        what = entity.get("what") if isinstance(entity, dict) else None
        if isinstance(what, dict) and isinstance(what.get("reference"), str):
            kinds.add(what["reference"].split("/")[0])
        kind = entity.get("type") if isinstance(entity, dict) else None
        if isinstance(kind, dict) and kind.get("system") == "http://hl7.org/fhir/resource-types":
            kinds.add(str(kind.get("code")))
    return kinds


def _organization_names(conn: Connection, events: list[audit_store.StoredEvent]) -> dict[str, str]:
    wanted = {
        ("Organization", e.organization.split("/", 1)[1])
        for e in events
        if e.organization and e.organization.startswith("Organization/")
    }
    names = {}
    for found in search_queries.read_many(conn, wanted):
        name = jsonio.loads(found.content).get("name")
        if isinstance(name, str):
            names[f"Organization/{found.resource_id}"] = name
    return names


def consents(conn: Connection, ctx: RequestContext) -> Result:
    patient_id = patient_of(ctx, "Consent")
    page = search_queries.compartment_page(
        conn, patient_id, types=["Consent"], since=None, after=None, limit=1000
    )
    items = []
    for found in page:
        consent = jsonio.loads(found.content)
        _, actors = refusals(consent)
        items.append(
            {
                "id": found.resource_id,
                "status": consent.get("status"),
                "refuses": list(actors),
                "dateTime": consent.get("dateTime"),
            }
        )
    return Result(200, {"items": items}, patients=frozenset({patient_id}))


def as_service(ctx: RequestContext) -> RequestContext:
    """The resident asks; the service writes the Consent for them (the audit keeps
    the resident as the one who acted)."""
    return replace(ctx, caller=SERVICE)


def grant_refusal(conn: Connection, ctx: RequestContext, body: Any) -> Result:
    """Body ``{"refuse": {"region": "sichuan"}}`` or
    ``{"refuse": {"organization": "Organization/x"}}``."""
    patient_id = patient_of(ctx, "Consent", "c")
    refuse = body.get("refuse") if isinstance(body, dict) else None
    if not isinstance(refuse, dict) or len(refuse) != 1:
        raise FhirError.of(
            Category.INCORRECT,
            'Send {"refuse": {"region": "<code>"}} or '
            '{"refuse": {"organization": "Organization/<id>"}}',
            code="invalid",
        )
    ((kind, value),) = refuse.items()
    if kind == "region" and isinstance(value, str) and value.isalnum():
        reference: dict[str, Any] = {"identifier": {"system": REGION_SYSTEM, "value": value}}
    elif (
        kind == "organization"
        and isinstance(value, str)
        and value.startswith("Organization/")
        and len(value) < 100
    ):
        reference = {"reference": value}
    else:
        raise FhirError.of(Category.INCORRECT, "refuse: a region code or an Organization reference")
    consent = privacy_consent(patient_id, "deny", reference)
    created = create.create(conn, as_service(ctx), "Consent", consent)
    _, actors = refusals(consent)
    body_out = {"id": created.resource_id, "status": "active", "refuses": list(actors)}
    return Result(201, body_out, "Consent", created.resource_id, patients=frozenset({patient_id}))


PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"


def privacy_consent(
    patient_id: str, provision: str, actor: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    """A resident's privacy Consent made through the citizen API: a ``deny`` (a
    refusal) or a ``permit`` (a sharing permit) of one recipient (``actor``)."""
    return {
        "resourceType": "Consent",
        "status": "active",
        "scope": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                    "code": "patient-privacy",
                }
            ]
        },
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{patient_id}"},
        "dateTime": datetime.now().astimezone().isoformat(timespec="seconds"),
        **extra,
        "provision": {
            "type": provision,
            "actor": [
                {
                    "role": {"coding": [{"system": PARTICIPATION, "code": "IRCP"}]},
                    "reference": actor,
                }
            ],
        },
    }


def revoke(conn: Connection, ctx: RequestContext, consent_id: str) -> Result:
    patient_id = patient_of(ctx, "Consent", "u")
    stored = current_or_fail(conn, "Consent", consent_id, view=ctx.view)
    consent = jsonio.loads(stored.content or b"{}")
    consent["status"] = "inactive"
    update.store_next_version(conn, as_service(ctx), stored, consent, method="PUT")
    body = {"id": consent_id, "status": "inactive", "refuses": []}
    return Result(200, body, "Consent", consent_id, patients=frozenset({patient_id}))
