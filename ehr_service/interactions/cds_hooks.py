"""CDS Hooks 2.0 services for ordering (docs/architecture.md §7): recognition at the
moment a doctor orders a test.

- ``GET /cds-services``: discovery of the ``order-select`` and ``order-sign`` services;
- ``POST /cds-services/{id}``: the draft ServiceRequests of ``context.draftOrders``
  are mapped to catalogue items and looked up with the same rules and lookup as
  ``$recognizable-results``; each recognisable prior result becomes a card whose
  suggestions record a decision as ``$recognition-decision`` would
  (``interactions/cds_cards.py``); the feedback on it is ``interactions/cds_feedback.py``.

The patient: with ``fhirServer`` this service's own FHIR base, ``context.patientId``
is a local id (prefetched or not, it is read here). Otherwise the CDS client's
Patient (prefetched, or fetched from a trusted ``fhirServer`` with
``fhirAuthorization``) is matched to a resident by the resident ID number. No
usable source of the patient is a 412, as the specification says.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import httpx
from sqlalchemy import Connection

from ehr_service.fhir import jsonio
from ehr_service.fhir.errors import Category, FhirError
from ehr_service.fhir.primitives import utc_now
from ehr_service.fhir.references import parse_reference
from ehr_service.interactions import cds_cards
from ehr_service.interactions.cds_cards import HookCall
from ehr_service.interactions.context import RequestContext
from ehr_service.interactions.recognition import (
    active_catalogue,
    assessed,
    candidates,
    offer_fact,
)
from ehr_service.interactions.results import Result
from ehr_service.mpi.matching import person_of
from ehr_service.recognition.catalogue import RESULT_TYPES, Catalogue, Item
from ehr_service.recognition.rules import Assessment, Candidate, local_day
from ehr_service.security.policy import require, require_staff
from ehr_service.storage import cds as cds_store
from ehr_service.storage import consent as consent_store
from ehr_service.storage import identity as identity_store
from ehr_service.storage import recognition as recognition_store
from ehr_service.storage import resources

PREFETCH = {"patient": "Patient/{{context.patientId}}"}
SERVICES: dict[str, dict[str, str]] = {
    "recognition-order-select": {
        "hook": "order-select",
        "title": "Result recognition when a test is selected",
        "description": "Prior results of the selected laboratory and imaging orders that may "
        "be recognised instead of repeated (Chongqing–Sichuan mutual recognition), with "
        "suggestions that record the doctor's decision and its national reason.",
    },
    "recognition-order-sign": {
        "hook": "order-sign",
        "title": "Result recognition before orders are signed",
        "description": "Before signing, the draft laboratory and imaging orders whose item has "
        "a recognisable prior result, with suggestions to reuse it (cancelling the order) or "
        "to re-test with a national reason.",
    },
}
MAX_ORDERS = 100  # draft orders considered in one call


def discovery() -> dict[str, Any]:
    return {
        "services": [
            {"hook": s["hook"], "title": s["title"], "description": s["description"],
             "id": service_id, "prefetch": dict(PREFETCH)}
            for service_id, s in SERVICES.items()
        ]
    }  # fmt: skip


def bad(message: str, expression: str, category: Category = Category.INCORRECT) -> FhirError:
    return FhirError.of(category, message, code="invalid", expression=[expression])


def precondition(message: str) -> FhirError:
    return FhirError.of(Category.PRECONDITION_FAILED, message, code="not-found")


def unknown_service(service_id: str) -> FhirError:
    return FhirError.of(
        Category.NOT_FOUND, f"No CDS service '{service_id[:64]}' (see GET /cds-services)"
    )


def _string(document: dict[str, Any], name: str, where: str) -> str:
    value = document.get(name)
    if not isinstance(value, str) or not value.strip() or len(value) > 255:
        raise bad(f"{where}{name} is required: a string of at most 255 characters", where + name)
    return value


def parse_call(service_id: str, body: Any, language: str) -> HookCall:
    """The request body, checked; 404 for an unknown service, 400 for what is malformed."""
    service = SERVICES.get(service_id)
    if service is None:
        raise unknown_service(service_id)
    if not isinstance(body, dict):
        raise bad("The body must be a CDS Hooks request (a JSON object)", "$")
    hook = _string(body, "hook", "")
    if hook != service["hook"]:
        raise bad(f"The service {service_id} answers the {service['hook']} hook, not {hook}",
                  "hook")  # fmt: skip
    instance = _string(body, "hookInstance", "")
    context = body.get("context")
    if not isinstance(context, dict):
        raise bad("context is required: an object", "context")
    patient_id = _string(context, "patientId", "context.")
    user_id = _string(context, "userId", "context.")
    orders = _draft_orders(context, hook, patient_id)
    server = body.get("fhirServer")
    if server is not None and (not isinstance(server, str) or not server.startswith("http")):
        raise bad("fhirServer must be the base URL of the client's FHIR server", "fhirServer")
    authorization = body.get("fhirAuthorization")
    token = None
    if authorization is not None:
        if server is None:
            raise bad("fhirAuthorization needs fhirServer", "fhirServer")
        if not isinstance(authorization, dict) or authorization.get("token_type") != "Bearer":
            raise bad("fhirAuthorization must hold a Bearer access_token", "fhirAuthorization")
        token = _string(authorization, "access_token", "fhirAuthorization.")
    prefetch = body.get("prefetch")
    if prefetch is not None and not isinstance(prefetch, dict):
        raise bad("prefetch must be an object of prefetch keys", "prefetch")
    prefetched = isinstance(prefetch, dict) and "patient" in prefetch
    patient = prefetch.get("patient") if isinstance(prefetch, dict) else None
    if patient is not None:
        check_patient(patient, patient_id, "prefetch.patient")
    return HookCall(service_id, hook, instance, patient_id, user_id, orders,
                    server.rstrip("/") if isinstance(server, str) else None, token,
                    prefetched, patient, language)  # fmt: skip


def check_patient(patient: Any, patient_id: str, where: str) -> None:
    if not isinstance(patient, dict) or patient.get("resourceType") != "Patient":
        raise bad(f"{where} must be a Patient resource", where)
    if patient.get("id") not in (None, patient_id):
        raise bad(f"{where} is not context.patientId ({patient_id})", where)


def _draft_orders(context: dict[str, Any], hook: str, patient_id: str) -> list[dict[str, Any]]:
    """The ServiceRequests of ``draftOrders`` (for order-select: those selected); other
    kinds of order (medication, nutrition...) are no tests and are left out."""
    bundle = context.get("draftOrders")
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise bad("context.draftOrders is required: a Bundle", "context.draftOrders")
    entries = bundle.get("entry") or []
    if not isinstance(entries, list) or len(entries) > MAX_ORDERS:
        raise bad(f"context.draftOrders.entry: a list of at most {MAX_ORDERS} orders",
                  "context.draftOrders.entry")  # fmt: skip
    selections: set[str] | None = None
    if hook == "order-select":
        chosen = context.get("selections")
        if (
            not isinstance(chosen, list)
            or not chosen
            or not all(isinstance(s, str) for s in chosen)
        ):
            raise bad("context.selections is required: the ids of the selected orders",
                      "context.selections")  # fmt: skip
        selections = set(chosen)
    orders = []
    for index, entry in enumerate(entries):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            raise bad("each draftOrders entry needs a resource",
                      f"context.draftOrders.entry[{index}]")  # fmt: skip
        if resource["resourceType"] != "ServiceRequest":
            continue
        reference = f"ServiceRequest/{resource.get('id')}"
        if selections is not None and reference not in selections:
            continue
        subject = (resource.get("subject") or {}).get("reference")
        parsed = parse_reference(subject) if isinstance(subject, str) else None
        if parsed is not None and parsed.resource_id != patient_id:
            raise bad(f"{reference} is an order for another patient than context.patientId",
                      f"context.draftOrders.entry[{index}].resource.subject")  # fmt: skip
        orders.append(resource)
    return orders


# -- the patient ----------------------------------------------------------------------
def is_own_server(call: HookCall, base_url: str) -> bool:
    return call.fhir_server is not None and call.fhir_server == base_url.rstrip("/")


def fetch_source(call: HookCall, ctx: RequestContext) -> str | None:
    """The URL to fetch the Patient from, or None when nothing needs fetching; 412 when
    the patient can neither be read here, nor was prefetched, nor may be fetched."""
    if is_own_server(call, ctx.base_url) or call.prefetched:
        return None
    if call.fhir_server is None:
        raise precondition("The patient is needed: send prefetch.patient, or fhirServer "
                           "and fhirAuthorization")  # fmt: skip
    trusted = {s.rstrip("/") for s in ctx.settings.cds_fhir_servers}
    if call.fhir_server not in trusted:
        raise precondition(
            f"fhirServer {call.fhir_server[:200]} is not a FHIR server this service trusts "
            "(EHR_CDS_FHIR_SERVERS): send prefetch.patient instead"
        )
    if call.access_token is None:
        raise precondition("Fetching from fhirServer needs fhirAuthorization")
    return f"{call.fhir_server}/Patient/{call.patient_id}"


def fetch_patient(ctx: RequestContext, call: HookCall, url: str) -> dict[str, Any] | None:
    """The Patient from the client's FHIR server (None when it does not know it); 412 when
    the server cannot be reached or refuses."""
    try:
        response = httpx.get(
            url,
            headers={"Authorization": f"Bearer {call.access_token}",
                     "Accept": "application/fhir+json"},
            timeout=ctx.settings.cds_fetch_timeout_s,
            follow_redirects=False,
        )  # fmt: skip
    except httpx.HTTPError as error:
        raise precondition(f"fhirServer could not be reached: {type(error).__name__}") from None
    if response.status_code in (404, 410):
        return None
    if response.status_code != 200:
        raise precondition(f"fhirServer answered {response.status_code} for the Patient")
    try:
        patient = jsonio.loads(response.content)
    except ValueError:
        raise precondition("fhirServer answered something that is not JSON") from None
    try:
        check_patient(patient, call.patient_id, "the fetched Patient")
    except FhirError:
        raise precondition("fhirServer did not answer with that Patient") from None
    return dict(patient)


def local_patient(conn: Connection, ctx: RequestContext, call: HookCall) -> str | None:
    """The resident's id here, or None when this service does not know them (or the
    caller may not see them)."""
    if is_own_server(call, ctx.base_url):
        patient_id: str | None = call.patient_id
    else:
        patient_id = None
        protection = ctx.services.identity.protection
        for number in sorted(person_of(call.patient or {}).id_numbers):
            patient_id = identity_store.id_number_holder(conn, protection.blind_tokens(number))
            if patient_id is not None:
                break
    if patient_id is None:
        return None
    stored = resources.read_current(conn, "Patient", patient_id)
    if stored is None or stored.deleted or not ctx.view.can_see("Patient", patient_id):
        return None
    return patient_id


# -- the advice -----------------------------------------------------------------------
def _order_items(catalogue: Catalogue, order: dict[str, Any]) -> list[Item]:
    items: dict[str, Item] = {}
    for coding in (order.get("code") or {}).get("coding") or ():
        if isinstance(coding, dict):
            # a national service item code stands for every item it covers
            for item in catalogue.items_of_coding(str(coding.get("system")),
                                                  str(coding.get("code"))):  # fmt: skip
                items[item.code] = item
    return list(items.values())


def _best(found: list[tuple[Candidate, Assessment]]) -> dict[str, tuple[Candidate, Assessment]]:
    """Per item, its recognisable result (the newest usable one, as the rules choose)."""
    best: dict[str, tuple[Candidate, Assessment]] = {}
    for candidate, assessment in found:
        if assessment.recognizable and candidate.item is not None:
            current = best.get(candidate.item.code)
            if current is None or (candidate.day or date.min) > (current[0].day or date.min):
                best[candidate.item.code] = (candidate, assessment)
    return best


def advise(conn: Connection, ctx: RequestContext, call: HookCall) -> Result:
    """The cards for a hook call; stores each card (for its feedback) and the offers."""
    require_staff(ctx.caller, "Patient", "r")
    for resource_type in RESULT_TYPES:
        require(ctx.caller, resource_type, "s")
    patient_id = local_patient(conn, ctx, call)
    empty = Result(200, {"cards": []}, patients=Result.owners(patient_id))
    if patient_id is None or not call.orders:
        return empty
    if ctx.view.refused_actors and consent_store.refused(conn, patient_id,
                                                         ctx.view.refused_actors):  # fmt: skip
        return empty  # the resident refused sharing with this caller: nothing is revealed
    catalogue = active_catalogue(ctx)
    wanted = {i.code for order in call.orders for i in _order_items(catalogue, order)}
    if not wanted:
        return empty
    org = ctx.caller.organization
    requester = (org if org.startswith("Organization/") else f"Organization/{org}") if org else None
    found = candidates(conn, ctx, catalogue, patient_id, wanted, [], requester)
    best = _best(assessed(found, local_day(utc_now())))
    cards, rows, offers = [], [], {}
    now = utc_now()
    for order in call.orders:
        for item in _order_items(catalogue, order):
            if item.code not in best:
                continue
            candidate, assessment = best[item.code]
            card, suggestions = cds_cards.card(ctx, call, catalogue, item, order, candidate,
                                               assessment)  # fmt: skip
            cards.append(card)
            rows.append(cds_cards.card_row(ctx, call, card["uuid"], patient_id, item, order,
                                           candidate, suggestions, now))  # fmt: skip
            offers[(item.code, candidate.reference)] = offer_fact(patient_id, item, candidate)
    cds_store.add_cards(conn, rows)
    recognition_store.add_facts(conn, list(offers.values()))
    return Result(200, {"cards": cards}, patients=frozenset({patient_id}))
