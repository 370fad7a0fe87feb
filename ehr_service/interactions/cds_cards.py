"""The cards of the recognition CDS services (CDS Hooks 2.0 §CDS Service Response), in
Chinese or English.

One card per draft order and catalogue item with a recognisable prior result: which
result (item, institution, region, date, recognisable until), a link to it, and
suggestions (``selectionBehavior`` at-most-one):

- reuse it: create the decision Task ``accepted`` (as ``$recognition-decision``
  stores it) and ``delete`` the draft order;
- re-test, one suggestion per national reason: create the decision Task ``retest``
  with that reason (the draft order stays). The reason "other" needs text: it is
  offered as an ``overrideReason`` (with the user's comment) like every reason.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ehr_service.fhir import jsonio
from ehr_service.interactions.context import RequestContext
from ehr_service.interactions.recognition import decision_task
from ehr_service.recognition.catalogue import Catalogue, Item
from ehr_service.recognition.rules import RETEST_REASONS, RETEST_SYSTEM, Assessment, Candidate

SUGGESTION_SYSTEM = "urn:ehr-service:cds-suggestion"  # the Task a suggestion creates
TOPIC = {"system": "urn:ehr-service:cds-topic", "code": "result-recognition"}
MAX_SUMMARY = 139  # "<140-character"
RETEST_REASONS_ZH = {
    "condition-changed": "病情变化",
    "rapid-change": "检查检验结果随病程变化快",
    "critical-decision": "重大医疗决策（如手术、输血）需要新结果",
    "emergency": "急诊或抢救",
    "forensic-assessment": "司法鉴定、伤残或退休评定",
    "other": "其他（需说明）",
}
TEXT = {
    "zh": {
        "source": "川渝检查检验结果互认",
        "topic": "检查检验结果互认",
        "summary": "{item}已有可互认结果：{date}，{institution}（可互认至{until}）",
        "item": "项目",
        "institution": "机构",
        "region": "地区",
        "date": "检查日期",
        "until": "可互认至",
        "intro": "该患者近期已有本项目的可互认结果，可不必重复检查。",
        "accept": "采用该结果（互认），撤销本申请",
        "accept_task": "记录采用已有结果的互认决定",
        "delete": "撤销本项检查申请",
        "retest": "仍需复查：{reason}",
        "retest_task": "记录复查决定及理由：{reason}",
        "link": "查看该结果",
        "unknown": "未知机构",
    },
    "en": {
        "source": "Chongqing–Sichuan result recognition",
        "topic": "Result recognition",
        "summary": "{item}: recognisable result of {date} at {institution} (until {until})",
        "item": "Item",
        "institution": "Institution",
        "region": "Region",
        "date": "Date",
        "until": "Recognisable until",
        "intro": "A recent result of this item may be recognised instead of repeating the test.",
        "accept": "Reuse this result and cancel the order",
        "accept_task": "Record the decision to reuse the prior result",
        "delete": "Cancel the draft order",
        "retest": "Re-test: {reason}",
        "retest_task": "Record the re-test and its reason: {reason}",
        "link": "Open the result",
        "unknown": "unknown institution",
    },
}


@dataclass(frozen=True, slots=True)
class HookCall:
    """A CDS Hooks request, checked (CDS Hooks 2.0 §Calling a CDS Service)."""

    service: str
    hook: str
    hook_instance: str
    patient_id: str  # as the CDS client names the patient
    user_id: str
    orders: list[dict[str, Any]]  # the draft ServiceRequests the advice is about
    fhir_server: str | None
    access_token: str | None
    prefetched: bool  # the prefetch key "patient" was sent (its value may be null)
    patient: dict[str, Any] | None = None  # the client's Patient, prefetched or fetched
    language: str = "zh"


def language_of(accept_language: str | None) -> str:
    """zh or en from an Accept-Language header (Chinese unless English comes first)."""
    for part in (accept_language or "").split(","):
        tag = part.split(";")[0].strip().lower()
        if tag.startswith("zh"):
            return "zh"
        if tag.startswith("en"):
            return "en"
    return "zh"


def reason_display(reason: str, language: str) -> str:
    return RETEST_REASONS_ZH[reason] if language == "zh" else RETEST_REASONS[reason]


def override_reasons(language: str) -> list[dict[str, str]]:
    return [
        {"system": RETEST_SYSTEM, "code": code, "display": reason_display(code, language)}
        for code in RETEST_REASONS
    ]


def _summary(text: str) -> str:
    return text if len(text) <= MAX_SUMMARY else text[: MAX_SUMMARY - 1] + "…"


def card(
    ctx: RequestContext, call: HookCall, catalogue: Catalogue, item: Item,
    order: dict[str, Any], candidate: Candidate, assessment: Assessment,
) -> tuple[dict[str, Any], dict[str, str]]:  # fmt: skip
    """The card and its suggestions' decisions ({suggestion uuid: accepted | retest:reason})."""
    words = TEXT[call.language]
    name = item.name_zh if call.language == "zh" else item.name_en
    institution = candidate.institution
    place = (institution.name or institution.reference) if institution else words["unknown"]
    day = candidate.day.isoformat() if candidate.day else "-"
    until = (
        (assessment.expires_on - timedelta(days=1)).isoformat() if assessment.expires_on else "-"
    )
    own = call.fhir_server is not None and call.fhir_server == ctx.base_url.rstrip("/")
    result_url = f"{ctx.base_url}/{candidate.reference}"
    reused = candidate.reference if own else result_url
    order_id = order.get("id") if isinstance(order.get("id"), str) else None
    order_ref = f"ServiceRequest/{order_id}" if order_id else None
    org = ctx.caller.organization
    requester = (org if org.startswith("Organization/") else f"Organization/{org}") if org else None
    decisions: dict[str, str] = {}

    def task(kind: str, reason: str | None, suggestion: str) -> dict[str, Any]:
        body = decision_task(catalogue, item, kind, call.patient_id, order_ref, requester,
                             reused if kind == "accepted" else None, reason, None)  # fmt: skip
        body["identifier"] = [{"system": SUGGESTION_SYSTEM, "value": f"urn:uuid:{suggestion}"}]
        return body

    accept_id = str(uuid.uuid4())
    decisions[accept_id] = "accepted"
    actions: list[dict[str, Any]] = [
        {"type": "create", "description": words["accept_task"],
         "resource": task("accepted", None, accept_id)},
    ]  # fmt: skip
    if order_ref:
        actions.append({"type": "delete", "description": words["delete"], "resourceId": order_ref})
    suggestions = [{"label": words["accept"], "uuid": accept_id, "isRecommended": True,
                    "actions": actions}]  # fmt: skip
    for reason in RETEST_REASONS:
        if reason == "other":  # needs text: an override reason with the user's comment
            continue
        suggestion_id = str(uuid.uuid4())
        decisions[suggestion_id] = f"retest:{reason}"
        shown = reason_display(reason, call.language)
        suggestions.append({
            "label": words["retest"].format(reason=shown),
            "uuid": suggestion_id,
            "actions": [{"type": "create", "description": words["retest_task"].format(
                reason=shown), "resource": task("retest", reason, suggestion_id)}],
        })  # fmt: skip
    region = candidate.region or "-"
    detail = "\n".join([
        words["intro"], "", f"| {words['item']} | {name} ({item.code}) |", "|---|---|",
        f"| {words['institution']} | {place} |", f"| {words['region']} | {region} |",
        f"| {words['date']} | {day} |", f"| {words['until']} | {until} |",
    ])  # fmt: skip
    body: dict[str, Any] = {
        "uuid": str(uuid.uuid4()),
        "summary": _summary(
            words["summary"].format(item=name, date=day, institution=place, until=until)
        ),
        "detail": detail,
        "indicator": "info",
        "source": {"label": words["source"], "topic": {**TOPIC, "display": words["topic"]}},
        "suggestions": suggestions,
        "selectionBehavior": "at-most-one",
        "overrideReasons": override_reasons(call.language),
        "links": [{"label": words["link"], "url": result_url, "type": "absolute"}],
    }
    return body, decisions


def card_row(
    ctx: RequestContext, call: HookCall, card_id: str, patient_id: str, item: Item,
    order: dict[str, Any], candidate: Candidate, decisions: dict[str, str], now: datetime,
) -> dict[str, Any]:  # fmt: skip
    """The stored form of a card (storage.cds), for its feedback."""
    order_id = order.get("id")
    return {
        "card_id": card_id,
        "service": call.service,
        "hook_instance": call.hook_instance[:64],
        "client": client_of(ctx),
        "issued": now,
        "patient_id": patient_id,
        "item": item.code,
        "result_ref": candidate.reference,
        "order_ref": f"ServiceRequest/{order_id}"[:255] if isinstance(order_id, str) else None,
        "institution": candidate.institution.reference if candidate.institution else None,
        "region": candidate.region[:64] if candidate.region else None,
        "suggestions": jsonio.dumps(decisions).decode(),
    }


def client_of(ctx: RequestContext) -> str:
    return (ctx.caller.client_id or ctx.caller.subject)[:255]
