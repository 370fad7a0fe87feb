"""CDS Hooks feedback counted in $recognition-stats, the specification's request
shapes, and bad CDS Hooks requests (clear errors, nothing stored)."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from ehr_service.interactions.context import Services
from ehr_service.recognition.rules import RETEST_SYSTEM
from ehr_service.storage.tables import cds_card, recognition_fact
from tests.api.cds_helpers import GLUCOSE, MEDICATION, call, draft, hook_request, resident
from tests.helpers import bearer, snapshot

FEEDBACK = "/cds-services/recognition-order-sign/feedback"
WHEN = "2026-12-01T08:00:00Z"


def issue(client: TestClient, ids: dict[str, str], order: str = "glu") -> dict[str, Any]:
    body = hook_request("order-sign", ids["patient"], [draft(order, GLUCOSE, ids["patient"])])
    response = call(client, "order-sign", body)
    assert response.status_code == 200, response.text
    (card,) = response.json()["cards"]
    return dict(card)


def stats(client: TestClient, group_by: str = "item") -> dict[str, dict[str, Any]]:
    response = client.get("/fhir/$recognition-stats", params={"groupBy": group_by})
    assert response.status_code == 200, response.text
    out = {}
    for group in response.json()["parameter"]:
        if group["name"] != "group":
            continue
        parts: dict[str, Any] = {"reasons": {}}
        for p in group["part"]:
            if p["name"] == "retestReason":
                parts["reasons"][p["part"][0]["valueCoding"]["code"]] = p["part"][1]["valueInteger"]
            else:
                parts[p["name"]] = next(v for k, v in p.items() if k.startswith("value"))
        out[parts["group"]] = parts
    return out


def accepted(card: dict[str, Any], suggestion: int = 0) -> dict[str, Any]:
    chosen = card["suggestions"][suggestion]["uuid"]
    return {"card": card["uuid"], "outcome": "accepted",
            "acceptedSuggestions": [{"id": chosen}], "outcomeTimestamp": WHEN}  # fmt: skip


def overridden(card: dict[str, Any], reason: str | None, comment: str | None = None) -> Any:
    entry: dict[str, Any] = {"card": card["uuid"], "outcome": "overridden",
                             "outcomeTimestamp": WHEN}  # fmt: skip
    if reason or comment:
        entry["overrideReason"] = {}
        if reason:
            entry["overrideReason"]["reason"] = {"system": RETEST_SYSTEM, "code": reason}
        if comment:
            entry["overrideReason"]["userComment"] = comment
    return entry


def test_feedback_is_counted_in_the_statistics(client: TestClient, services: Services) -> None:
    ids = resident(client)
    reuse, retest, other, plain = (issue(client, ids, f"o{n}") for n in range(4))
    both = [accepted(reuse), accepted(retest, 4)]  # suggestion 4: re-test, emergency
    sent = client.post(FEEDBACK, json={"feedback": both})
    assert sent.status_code == 200, sent.text
    assert sent.json() == {"recorded": 2}
    again = client.post(FEEDBACK, json={"feedback": [accepted(reuse)]})  # a repeat: once
    assert again.status_code == 200 and again.json() == {"recorded": 0}
    sent = client.post(FEEDBACK, json={"feedback": [
        overridden(other, "other", "患者要求复查"), overridden(plain, None)]})  # fmt: skip
    assert sent.status_code == 200, sent.text
    figures = stats(client)["LAB-GLU"]
    assert figures["offered"] == 1  # one result offered four times today: one offer
    assert figures["accepted"] == 1 and figures["testsAvoided"] == 1
    assert figures["costAvoided"] == {"value": 4.0, "currency": "CNY"}
    assert figures["retested"] == 3
    assert figures["reasons"] == {"emergency": 1, "other": 1}  # one gave no reason
    assert stats(client, "institution")["Organization/q1"]["accepted"] == 1
    # the decisions are Tasks in the resident's record, as $recognition-decision makes them
    tasks = client.get("/fhir/Task", params={"patient": ids["patient"]}).json()
    kinds = sorted(e["resource"]["code"]["coding"][0]["code"] for e in tasks["entry"])
    assert kinds == ["accepted", "retest", "retest", "retest"]
    texts = [e["resource"].get("reasonCode", {}).get("text") for e in tasks["entry"]]
    assert "患者要求复查" in texts
    # answering a card differently afterwards is a conflict, and changes nothing
    before = snapshot(services)
    changed = client.post(FEEDBACK, json={"feedback": [overridden(reuse, "emergency")]})
    assert changed.status_code == 409 and changed.json()["resourceType"] == "OperationOutcome"
    assert snapshot(services) == before


def test_a_task_the_client_created_here_is_not_stored_twice(client: TestClient) -> None:
    ids = resident(client)
    card = issue(client, ids)
    action = card["suggestions"][0]["actions"][0]
    made = client.post("/fhir/Task", json=action["resource"],
                       headers={"Content-Type": "application/fhir+json"})  # fmt: skip
    assert made.status_code == 201, made.text
    assert client.post(FEEDBACK, json={"feedback": [accepted(card)]}).status_code == 200
    tasks = client.get("/fhir/Task", params={"patient": ids["patient"]}).json()
    assert tasks["total"] == 1
    assert stats(client)["LAB-GLU"]["accepted"] == 1


def facts(services: Services) -> int:
    with services.unit.read() as conn:
        return int(
            conn.execute(sa.select(sa.func.count()).select_from(recognition_fact)).scalar_one()
        )


def test_bad_feedback_stores_nothing(client: TestClient, services: Services) -> None:
    ids = resident(client)
    card = issue(client, ids)
    good = accepted(card)
    stranger = bearer(services.settings, "system/*.cruds", subject="another-client")
    cases: list[tuple[Any, int, str]] = [
        ({"feedback": []}, 400, "feedback"),
        ([good], 400, "feedback"),
        ({"feedback": [{**good, "card": "not-issued"}]}, 400, "feedback[0].card"),
        ({"feedback": [{**good, "outcome": "ignored"}]}, 400, "feedback[0].outcome"),
        ({"feedback": [{**good, "acceptedSuggestions": []}]}, 400,
         "feedback[0].acceptedSuggestions"),
        ({"feedback": [{**good, "acceptedSuggestions": [{"id": "x"}]}]}, 400,
         "feedback[0].acceptedSuggestions"),
        ({"feedback": [{k: v for k, v in good.items() if k != "outcomeTimestamp"}]}, 400,
         "feedback[0].outcomeTimestamp"),
        ({"feedback": [good, overridden(card, "made-up")]}, 400,
         "feedback[1].overrideReason.reason"),
        ({"feedback": [overridden(card, "other")]}, 422, "feedback[0].overrideReason.userComment"),
    ]  # fmt: skip
    before, counted = snapshot(services), facts(services)
    for body, status, where in cases:
        response = client.post(FEEDBACK, json=body)
        assert response.status_code == status, (body, response.text)
        assert where in response.json()["issue"][0].get("expression", [""])[0], response.text
    response = client.post(FEEDBACK, json={"feedback": [good]}, headers=stranger)
    assert response.status_code == 400  # another client's card
    assert client.post("/cds-services/nope/feedback", json={"feedback": [good]}).status_code == 404
    assert snapshot(services) == before and facts(services) == counted


@pytest.mark.parametrize(
    ("mutate", "status"),
    [
        (lambda b: b.update(hook="patient-view"), 400),
        (lambda b: b.pop("hookInstance"), 400),
        (lambda b: b.pop("context"), 400),
        (lambda b: b["context"].pop("patientId"), 400),
        (lambda b: b["context"].update(draftOrders=[]), 400),
        (lambda b: b["context"]["draftOrders"].update(entry=[{"resource": "x"}]), 400),
        (lambda b: b.update(fhirServer=42), 400),
        (lambda b: b.update(fhirAuthorization={"access_token": "t", "token_type": "MAC"}), 400),
        (lambda b: b.update(prefetch={"patient": {"resourceType": "Observation"}}), 400),
        (lambda b: b["context"]["draftOrders"]["entry"][0]["resource"].update(
            subject={"reference": "Patient/someone-else"}), 400),
    ],
)  # fmt: skip
def test_bad_hook_requests(
    client: TestClient, services: Services, mutate: Any, status: int
) -> None:
    ids = resident(client)
    body = hook_request("order-sign", ids["patient"], [draft("glu", GLUCOSE, ids["patient"])])
    mutate(body)
    before = snapshot(services)
    response = call(client, "order-sign", body)
    assert response.status_code == status, response.text
    assert response.json()["resourceType"] == "OperationOutcome"
    assert snapshot(services) == before
    with services.unit.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(cds_card)).scalar_one() == 0


def test_tokens_and_transport(client: TestClient, services: Services) -> None:
    ids = resident(client)
    body = hook_request("order-sign", ids["patient"], [draft("glu", GLUCOSE, ids["patient"])])
    url = "/cds-services/recognition-order-sign"
    assert client.post(url, json=body, headers={"Authorization": ""}).status_code == 401
    forged = {"Authorization": "Bearer not.a.token"}
    assert client.post(url, json=body, headers=forged).status_code == 401
    citizen = bearer(services.settings, "patient/*.rs", patient=ids["patient"])
    assert client.post(url, json=body, headers=citizen).status_code == 403
    no_results = bearer(services.settings, "user/Patient.rs")
    assert client.post(url, json=body, headers=no_results).status_code == 403
    assert client.post("/cds-services/unknown", json=body).status_code == 404
    broken = client.post(url, content=b"{not json", headers={"Content-Type": "application/json"})
    assert broken.status_code == 400
    xml = client.post(url, content=b"<a/>", headers={"Content-Type": "text/xml"})
    assert xml.status_code == 415


# The shape of the specification's order-sign example (R4): a nutrition and a medication
# order for the hospital's patient 1288992, with fhirServer and fhirAuthorization.
SPEC_EXAMPLE: dict[str, Any] = {
    "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
    "fhirServer": "http://hooks.smarthealthit.org:9080",
    "hook": "order-sign",
    "fhirAuthorization": {"access_token": "some-opaque-fhir-access-token", "token_type": "Bearer",
                          "expires_in": 300, "scope": "user/Patient.read user/Observation.read",
                          "subject": "cds-service4"},
    "context": {
        "userId": "PractitionerRole/123", "patientId": "1288992", "encounterId": "89284",
        "draftOrders": {"resourceType": "Bundle", "entry": [
            {"resource": {"resourceType": "NutritionOrder", "id": "pureeddiet-simple",
                          "status": "draft", "patient": {"reference": "Patient/1288992"},
                          "dateTime": "2014-09-17"}},
            {"resource": {**MEDICATION, "subject": {"reference": "Patient/1288992"}}},
        ]},
    },
    "prefetch": {"patient": {"resourceType": "Patient", "gender": "male",
                             "birthDate": "1925-12-23", "id": "1288992", "active": True}},
}  # fmt: skip


def test_the_specification_example_shapes(client: TestClient) -> None:
    response = call(client, "order-sign", SPEC_EXAMPLE)
    assert response.status_code == 200 and response.json() == {"cards": []}  # no test ordered
    without = {k: v for k, v in SPEC_EXAMPLE.items() if k != "prefetch"}
    refused = call(client, "order-sign", without)  # its fhirServer is not trusted here
    assert refused.status_code == 412
    selections = [
        "NutritionOrder/pureeddiet-simple",
        "MedicationRequest/smart-MedicationRequest-103",
    ]
    context = {**SPEC_EXAMPLE["context"], "selections": selections}
    select = {**SPEC_EXAMPLE, "hook": "order-select", "context": context}
    assert call(client, "order-select", select).json() == {"cards": []}
