"""Mutual recognition operations (docs/architecture.md §7):

- ``Patient/{id}/$recognizable-results``: every prior result of the requested
  items (local, or received from the partner region) with whether it may be
  recognised instead of repeated, the reasons when not, and the day it stops;
- ``Patient/{id}/$recognition-decision``: the doctor's decision for an order,
  stored as a Task (audited, in the resident's record);
- ``$recognition-stats``: offered, accepted, re-tested by reason, tests and cost
  avoided, per item, institution or region.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from ehr_service.fhir import jsonio
from ehr_service.fhir.errors import Category, FhirError
from ehr_service.fhir.parameters import OperationInput
from ehr_service.fhir.primitives import format_instant, new_id, parse_instant_param, utc_now
from ehr_service.fhir.references import parse_reference
from ehr_service.interactions.context import RequestContext
from ehr_service.interactions.create import created, prepare_create
from ehr_service.interactions.read import current_or_fail
from ehr_service.interactions.recognition_images import image_parts
from ehr_service.interactions.results import Result
from ehr_service.recognition.catalogue import RESULT_TYPES, Catalogue, Item
from ehr_service.recognition.institutions import Institution, institution_of
from ehr_service.recognition.marks import (
    performer_of,
)
from ehr_service.recognition.rules import (
    CST,
    REASON_SYSTEM,
    REASONS,
    RETEST_REASONS,
    RETEST_SYSTEM,
    Assessment,
    Candidate,
    assess,
    is_final,
    local_day,
    parse_day,
    result_date,
)
from ehr_service.security.policy import require, require_staff
from ehr_service.storage import consent as consent_store
from ehr_service.storage import recognition as store
from ehr_service.storage import resources
from ehr_service.storage.resources import NewVersion

DECISION_SYSTEM = "urn:ehr-service:recognition-decision"
EXCHANGE_SOURCE = "urn:ehr-service:exchange:"


def _bad(message: str, expression: str, status: Category = Category.INCORRECT) -> FhirError:
    return FhirError.of(status, message, code="invalid", expression=[expression])


def active_catalogue(ctx: RequestContext) -> Catalogue:
    catalogue = ctx.services.catalogues.active() if ctx.services.catalogues else None
    if catalogue is None:
        raise FhirError.of(
            Category.UNPROCESSABLE,
            "No recognition catalogue is loaded (ehr-service catalogue load FILE)",
            code="not-found",
        )
    return catalogue


def _patient(conn: Connection, ctx: RequestContext, patient_id: str) -> None:
    """The resident, read as a read of Patient/{id} is: 404 unknown or not visible,
    403 refused, 410 deleted (as ``$everything``)."""
    require(ctx.caller, "Patient", "r")
    current_or_fail(conn, "Patient", patient_id, view=ctx.view)


# -- inputs ---------------------------------------------------------------------------
def _reference(params: OperationInput, name: str, resource_type: str) -> str | None:
    """The id a Reference part points to (400 unless a Reference to that type)."""
    value = params.value(name, "Reference")
    if value is None:
        return None
    reference = value.get("reference") if isinstance(value, dict) else None
    parsed = parse_reference(reference) if isinstance(reference, str) else None
    if parsed is None or parsed.resource_type != resource_type or parsed.base is not None:
        raise _bad(f"{name} must be a valueReference to a {resource_type}", name)
    return parsed.resource_id


def _order(
    conn: Connection, ctx: RequestContext, params: OperationInput, patient_id: str
) -> tuple[str | None, list[tuple[str, str]]]:
    """The order (a ServiceRequest of this resident, that the caller may read) and its
    codes. Unknown, unreadable and someone else's orders get the same answer."""
    order_id = _reference(params, "serviceRequest", "ServiceRequest")
    if order_id is None:
        return None, []
    refused = FhirError.of(
        Category.UNPROCESSABLE,
        f"ServiceRequest/{order_id} is not an order of this resident",
        code="not-found",
        expression=["serviceRequest"],
    )
    require(ctx.caller, "ServiceRequest", "r")
    try:
        stored = current_or_fail(conn, "ServiceRequest", order_id, view=ctx.view)
    except FhirError:
        raise refused from None
    request = jsonio.loads(stored.content or b"{}")
    subject = (request.get("subject") or {}).get("reference")
    if stored.compartment_patient_id != patient_id or subject != f"Patient/{patient_id}":
        raise refused
    codings = [
        (str(c.get("system")), str(c.get("code")))
        for c in (request.get("code") or {}).get("coding") or ()
        if isinstance(c, dict)
    ]
    return f"ServiceRequest/{order_id}", codings


def _requested_items(
    conn: Connection,
    ctx: RequestContext,
    catalogue: Catalogue,
    params: OperationInput,
    patient_id: str,
) -> tuple[list[Item], list[tuple[str, str]], str | None]:
    """(catalogue items, codes asked for that are no catalogue item, the order). An
    order's codes that map to no item are ignored when another one does."""
    codings: list[tuple[str, str]] = []
    for part in params.all("item"):
        if isinstance(part.get("valueCoding"), dict):
            coding = part["valueCoding"]
            codings.append((str(coding.get("system") or catalogue.url), str(coding.get("code"))))
        elif isinstance(part.get("valueCode"), str):
            codings.append((catalogue.url, part["valueCode"]))
        else:
            raise _bad("item must be a valueCoding or a valueCode", "item")
    order_ref, order_codings = _order(conn, ctx, params, patient_id)
    if order_codings and any(catalogue.items_of_coding(*c) for c in order_codings):
        order_codings = [c for c in order_codings if catalogue.items_of_coding(*c)]
    codings += order_codings
    if not codings:
        raise _bad("give the items asked for: item codes and/or a serviceRequest", "item")
    items: dict[str, Item] = {}
    unknown = []
    for system, code in codings:  # a national service item code: each item it covers
        found = catalogue.items_of_coding(system, code)
        items.update((item.code, item) for item in found)
        if not found:
            unknown.append((system, code))
    return list(items.values()), unknown, order_ref


def _as_of(params: OperationInput) -> date:
    part = params.one("asOf")
    if part is None:
        return local_day(utc_now())
    value = part.get("valueDateTime", part.get("valueDate", part.get("valueInstant")))
    day = parse_day(value) if isinstance(value, str) else None
    if day is None:
        raise _bad("asOf must be a valueDateTime or valueDate", "asOf")
    return day


def _requester(ctx: RequestContext, params: OperationInput) -> str | None:
    org_id = _reference(params, "requester", "Organization")
    if org_id is None:
        org = ctx.caller.organization
        return (org if org.startswith("Organization/") else f"Organization/{org}") if org else None
    return f"Organization/{org_id}"


# -- candidates -----------------------------------------------------------------------
def _institutions(conn: Connection, references: set[str]) -> dict[str, Institution]:
    """The performing institutions, read in one query."""
    ids = sorted(r.partition("/")[2] for r in references)
    contents = resources.live_contents(conn, "Organization", ids)
    return {
        f"Organization/{org_id}": institution_of(f"Organization/{org_id}", jsonio.loads(content))
        for org_id, content in contents.items()
    }


def _partner_of(resource: dict[str, Any]) -> str | None:
    source = (resource.get("meta") or {}).get("source")
    if isinstance(source, str) and source.startswith(EXCHANGE_SOURCE):
        return source[len(EXCHANGE_SOURCE) :]
    return None


def candidates(
    conn: Connection,
    ctx: RequestContext,
    catalogue: Catalogue,
    patient_id: str,
    wanted: set[str],
    unknown: list[tuple[str, str]],
    requester: str | None,
) -> list[tuple[Candidate, dict[str, Any]]]:
    """The resident's results of the wanted items (and of codes asked for that are
    not catalogue items), with what the rules need to know about each."""
    refused_requester = bool(requester) and consent_store.refused(
        conn, patient_id, [requester or "", "*"]
    )
    partner_regions = _partner_regions(conn)
    refused_regions = {
        region
        for region in set(partner_regions.values())
        if consent_store.refused(conn, patient_id, [f"region:{region}"])
    }
    own_region = ctx.settings.region
    unknown_codes = set(unknown)
    chosen = []
    for resource_type, resource_id, content in store.patient_results(
        conn, patient_id, RESULT_TYPES
    ):
        resource = jsonio.loads(content)
        item = catalogue.item_for(resource_type, resource)
        asked_unknown = item is None and any(
            (str(c.get("system")), str(c.get("code"))) in unknown_codes
            for c in (resource.get("code") or {}).get("coding") or ()
            if isinstance(c, dict)
        )
        if (item is not None and item.code in wanted) or asked_unknown:
            chosen.append((resource_type, resource_id, resource, item))
    performers = {
        (resource_type, key): performer_of(resource_type, resource)
        for resource_type, key, resource, _ in chosen
    }
    institutions = _institutions(conn, {p for p in performers.values() if p})
    found = []
    for resource_type, resource_id, resource, item in chosen:
        performer = performers[(resource_type, resource_id)]
        institution = institutions.get(performer) if performer else None
        partner = _partner_of(resource)
        partner_region = partner_regions.get(partner) if partner else None
        region = (
            institution.region
            if institution and institution.region
            else (partner_region or own_region)
        )
        refused = refused_requester or (partner_region in refused_regions)
        found.append(
            (
                Candidate(
                    f"{resource_type}/{resource_id}",
                    resource_type,
                    item,
                    institution,
                    region,
                    result_date(resource_type, resource),
                    is_final(resource_type, resource),
                    refused,
                ),
                resource,
            )
        )
    return found


def _partner_regions(conn: Connection) -> dict[str, str]:
    from ehr_service.storage import partners as partner_store

    return {row["partner_id"]: row["region"] for row in partner_store.all_partners(conn)}


def assessed(
    found: list[tuple[Candidate, dict[str, Any]]], as_of: date
) -> list[tuple[Candidate, Assessment]]:
    """Assess each candidate; of an item's final results only the newest is not
    superseded. Results dated after ``asOf`` are not prior results: left out."""
    prior = [(c, r) for c, r in found if c.day is None or c.day <= as_of]
    newest: dict[str, tuple[date, str]] = {}
    for candidate, _ in prior:
        usable = (
            candidate.institution is not None
            and candidate.item is not None
            and candidate.day is not None
            and candidate.institution.passed(candidate.item.qc_category, candidate.day)
            and not candidate.consent_refused
        )
        if candidate.item and candidate.final and candidate.day and usable:
            key = (candidate.day, candidate.reference)
            current = newest.get(candidate.item.code)
            if current is None or key > current:
                newest[candidate.item.code] = key
    out = []
    for candidate, _ in prior:
        newer = newest.get(candidate.item.code) if candidate.item else None
        superseded = bool(  # a newer usable result of the item exists
            candidate.final
            and candidate.day
            and newer is not None
            and newer > (candidate.day, candidate.reference)
        )
        out.append((candidate, assess(candidate, as_of, superseded=superseded)))
    out.sort(key=lambda pair: (not pair[1].recognizable, pair[0].day or date.min), reverse=False)
    return out


# -- the operations ---------------------------------------------------------------------
def recognizable_results(
    conn: Connection, ctx: RequestContext, patient_id: str, body: Any
) -> Result:
    _patient(conn, ctx, patient_id)
    for resource_type in RESULT_TYPES:
        require(ctx.caller, resource_type, "s")
    params = OperationInput(body, "$recognizable-results")
    catalogue = active_catalogue(ctx)
    items, unknown, _order_ref = _requested_items(conn, ctx, catalogue, params, patient_id)
    as_of = _as_of(params)
    requester = _requester(ctx, params)
    found = candidates(
        conn, ctx, catalogue, patient_id, {i.code for i in items}, unknown, requester
    )
    results = assessed(found, as_of)
    parameters: list[dict[str, Any]] = [
        {"name": "edition", "valueString": catalogue.edition},
        {"name": "asOf", "valueDate": as_of.isoformat()},
    ]
    images = image_parts(conn, ctx, found)
    for candidate, assessment in results:
        parts = _result_parts(catalogue, candidate, assessment)
        if "consent-refused" not in assessment.reasons:  # withheld like the resource
            parts += images.get(candidate.reference, [])
        parameters.append({"name": "result", "part": parts})
    for system, code in dict.fromkeys(unknown):
        parameters.append(
            {"name": "notInCatalogue", "valueCoding": {"system": system, "code": code}}
        )
    offered = {}
    for candidate, assessment in results:
        if assessment.recognizable and candidate.item and candidate.item.code not in offered:
            offered[candidate.item.code] = candidate
    if ctx.caller.patient is None:  # the statistics count offers to doctors, once a day
        store.add_facts(  # the route runs this in a write transaction
            conn, [offer_fact(patient_id, c.item, c) for c in offered.values() if c.item]
        )
    return Result(
        200,
        {"resourceType": "Parameters", "parameter": parameters},
        patients=frozenset({patient_id}),
    )


def _item_coding(catalogue: Catalogue, item: Item) -> dict[str, Any]:
    return {"system": catalogue.url, "version": catalogue.edition, "code": item.code,
            "display": item.name_zh}  # fmt: skip


def _result_parts(
    catalogue: Catalogue, candidate: Candidate, assessment: Assessment
) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    if candidate.item is not None:
        parts.append({"name": "item", "valueCoding": _item_coding(catalogue, candidate.item)})
    withheld = "consent-refused" in assessment.reasons
    if not withheld:  # a refused use does not reveal where the result is
        parts.append({"name": "resource", "valueReference": {"reference": candidate.reference}})
        if candidate.institution is not None:
            reference: dict[str, Any] = {"reference": candidate.institution.reference}
            if candidate.institution.name:
                reference["display"] = candidate.institution.name
            parts.append({"name": "institution", "valueReference": reference})
        if candidate.region:
            parts.append({"name": "region", "valueCode": candidate.region})
    if candidate.day is not None:
        parts.append({"name": "date", "valueDate": candidate.day.isoformat()})
    parts.append({"name": "recognizable", "valueBoolean": assessment.recognizable})
    for reason in assessment.reasons:
        parts.append(
            {"name": "reason", "valueCoding": {"system": REASON_SYSTEM, "code": reason,
                                               "display": REASONS[reason]}}
        )  # fmt: skip
    if assessment.expires_on is not None:
        parts.append({"name": "expiresOn", "valueDate": assessment.expires_on.isoformat()})
    return parts


def _fact(
    kind: str,
    patient_id: str,
    item: Item,
    candidate: Candidate | None,
    reason: str | None,
    *,
    key: str | None = None,
) -> dict[str, Any]:
    return {
        "dedupe_key": key,
        "recorded": utc_now(),
        "kind": kind,
        "patient_id": patient_id,
        "item": item.code,
        "institution": candidate.institution.reference
        if candidate and candidate.institution
        else None,
        "region": candidate.region if candidate else None,
        "reason": reason,
        "price": item.price,
    }


def decision(conn: Connection, ctx: RequestContext, patient_id: str, body: Any) -> Result:
    """Record ``accepted`` (a prior result reused) or ``retest`` (with a national
    reason) for an order; 422 for a re-test without a reason or a result that is
    not recognisable."""
    _patient(conn, ctx, patient_id)
    require_staff(ctx.caller, "Task", "c")
    params = OperationInput(body, "$recognition-decision")
    catalogue = active_catalogue(ctx)
    items, unknown, order = _requested_items(conn, ctx, catalogue, params, patient_id)
    if len(items) != 1 or unknown:
        raise _bad(
            "a decision is for one catalogue item (item, or the serviceRequest's code)",
            "item", Category.UNPROCESSABLE,
        )  # fmt: skip
    item = items[0]
    kind = params.value("decision", "Code")
    if kind not in ("accepted", "retest"):
        raise _bad("decision must be 'accepted' or 'retest'", "decision")
    as_of = _as_of(params)
    requester = _requester(ctx, params)
    reused: Candidate | None = None
    reason = None
    reason_text = params.value("reasonText", "String")
    if kind == "accepted":
        result_ref = params.value("result", "Reference")
        reference = result_ref.get("reference") if isinstance(result_ref, dict) else None
        if not isinstance(reference, str):
            raise _bad("result must be a valueReference to the reused result", "result")
        target = reference
        found = candidates(conn, ctx, catalogue, patient_id, {item.code}, [], requester)
        verdicts = {c.reference: (c, a) for c, a in assessed(found, as_of)}
        if target not in verdicts:
            raise _bad(
                "accepted needs result: a prior result of this item in the resident's record",
                "result", Category.UNPROCESSABLE,
            )  # fmt: skip
        reused, verdict = verdicts[target]
        if not verdict.recognizable:
            raise _bad(
                f"{target} is not recognisable: {', '.join(verdict.reasons)}",
                "result", Category.UNPROCESSABLE,
            )  # fmt: skip
    else:
        part = params.one("reason") or {}
        coding = part.get("valueCoding")
        reason = part.get("valueCode", coding.get("code") if isinstance(coding, dict) else None)
        if not isinstance(reason, str) or reason not in RETEST_REASONS:
            raise _bad(
                "a re-test needs one of the national reasons: " + ", ".join(RETEST_REASONS),
                "reason", Category.UNPROCESSABLE,
            )  # fmt: skip
        if reason_text is not None and not isinstance(reason_text, str):
            raise _bad("reasonText must be a valueString", "reasonText")
        if reason == "other" and not (isinstance(reason_text, str) and reason_text.strip()):
            raise _bad("reason 'other' needs reasonText", "reasonText", Category.UNPROCESSABLE)
    task = decision_task(
        catalogue, item, kind, patient_id, order, requester,
        reused.reference if reused else None, reason, reason_text,
    )  # fmt: skip
    key = f"decision|{order}|{item.code}" if order else None
    fact = _fact(kind, patient_id, item, reused, reason, key=key)
    stored, version = record_decision(conn, ctx, task, fact)
    if not stored or version is None:
        raise FhirError.of(
            Category.CONFLICT,
            f"A decision for {order} and item {item.code} is already recorded",
            code="duplicate",
        )
    return created(version)


def record_decision(
    conn: Connection, ctx: RequestContext, task: dict[str, Any] | None, fact: dict[str, Any]
) -> tuple[bool, NewVersion | None]:
    """Store a decision: its Task (when given) in the resident's record and its fact in
    the statistics. (False, None), and nothing stored, when the fact's key is taken."""
    version = prepare_create(conn, ctx, "Task", task, new_id()) if task is not None else None
    if not store.add_facts(conn, [fact]):
        return False, None
    if version is not None:
        resources.insert_new(conn, [version])
    return True, version


def offer_fact(patient_id: str, item: Item, candidate: Candidate) -> dict[str, Any]:
    """An offer of a recognisable result to a doctor: counted once a day per result."""
    today = local_day(utc_now()).isoformat()
    key = f"offered|{patient_id}|{item.code}|{candidate.reference}|{today}"
    return _fact("offered", patient_id, item, candidate, None, key=key)


def decision_fact(
    kind: str, patient_id: str, item: Item, institution: str | None, region: str | None,
    reason: str | None, key: str,
) -> dict[str, Any]:  # fmt: skip
    """The statistics fact of a decision taken elsewhere than ``$recognition-decision``
    (the feedback on a CDS Hooks card), of the result reused when accepted."""
    fact = _fact(kind, patient_id, item, None, reason, key=key)
    return {**fact, "institution": institution, "region": region}


def decision_task(
    catalogue: Catalogue, item: Item, kind: str, patient_id: str, order: str | None,
    requester: str | None, reused: str | None, reason: str | None, text: Any,
) -> dict[str, Any]:  # fmt: skip
    """The Task that records a decision (``kind`` accepted or retest) for an order."""
    task: dict[str, Any] = {
        "resourceType": "Task",
        "status": "completed",
        "intent": "order",
        "code": {"coding": [{"system": DECISION_SYSTEM, "code": kind}]},
        "for": {"reference": f"Patient/{patient_id}"},
        "authoredOn": format_instant(utc_now()),
        "input": [
            {"type": {"text": "item"}, "valueCoding": _item_coding(catalogue, item)},
        ],
    }
    if order:
        task["focus"] = {"reference": order}
    if requester:
        task["requester"] = {"reference": requester}
    if reused is not None:
        task["input"].append({"type": {"text": "result"}, "valueReference": {"reference": reused}})
    if reason is not None:
        concept: dict[str, Any] = {
            "coding": [{"system": RETEST_SYSTEM, "code": reason, "display": RETEST_REASONS[reason]}]
        }
        if isinstance(text, str) and text.strip():
            concept["text"] = text.strip()
        task["reasonCode"] = concept
    return task


def stats(conn: Connection, ctx: RequestContext, query: dict[str, list[str]]) -> Result:
    require_staff(ctx.caller, "Task", "s")
    return Result(200, stats_parameters(conn, query))


def stats_parameters(conn: Connection, query: dict[str, list[str]]) -> dict[str, Any]:
    """The Parameters of ``$recognition-stats`` (from, to, groupBy), the caller checked."""
    group_by = (query.get("groupBy") or ["item"])[0]
    if group_by not in store.GROUPS:
        raise _bad("groupBy must be item, institution or region", "groupBy")
    start = _instant(query, "from")
    end = _instant(query, "to")
    groups: dict[str | None, dict[str, Any]] = defaultdict(
        lambda: {"offered": 0, "accepted": 0, "retest": 0, "reasons": defaultdict(int), "cost": 0.0}
    )
    for group, kind, reason, count, price in store.fact_counts(conn, start, end, group_by):
        figures = groups[group]
        figures[kind] = figures.get(kind, 0) + count
        if kind == "retest" and reason:
            figures["reasons"][reason] += count
        if kind == "accepted":
            figures["cost"] += price
    parameters: list[dict[str, Any]] = [{"name": "groupBy", "valueCode": group_by}]
    for group, figures in groups.items():
        parts: list[dict[str, Any]] = [
            {"name": "group", "valueString": group or "unknown"},
            {"name": "offered", "valueInteger": figures["offered"]},
            {"name": "accepted", "valueInteger": figures["accepted"]},
            {"name": "retested", "valueInteger": figures["retest"]},
        ]
        for reason, count in sorted(figures["reasons"].items()):
            parts.append({"name": "retestReason", "part": [
                {"name": "reason", "valueCoding": {"system": RETEST_SYSTEM, "code": reason}},
                {"name": "count", "valueInteger": count}]})  # fmt: skip
        parts.append({"name": "testsAvoided", "valueInteger": figures["accepted"]})
        money = {"value": round(figures["cost"], 2), "currency": "CNY"}
        parts.append({"name": "costAvoided", "valueMoney": money})
        parameters.append({"name": "group", "part": parts})
    return {"resourceType": "Parameters", "parameter": parameters}


def _instant(query: dict[str, list[str]], name: str) -> datetime | None:
    """``from``/``to``: an instant, or a day in China Standard Time (``to`` inclusive)."""
    values = query.get(name)
    if not values:
        return None
    value = values[0]
    if len(value) == 10:  # YYYY-MM-DD
        day = parse_day(value)
        if day is None:
            raise _bad(f"{name} must be a date or an instant", name)
        if name == "to":
            day += timedelta(days=1)
        return datetime(day.year, day.month, day.day, tzinfo=CST)
    return parse_instant_param(value, name)
