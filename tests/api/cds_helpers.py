"""Data and requests for the CDS Hooks tests: a resident whose results are dated
relative to today (the rules compare with today: CDS Hooks has no ``asOf``)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient

from ehr_service.fhir.primitives import utc_now
from ehr_service.recognition.institutions import REGION_URL, quality_control_extension
from ehr_service.recognition.rules import local_day
from tests.helpers import FHIR_JSON, ID_SYSTEM, id_identifier, lab, make_id_number

OWN_SERVER = "http://testserver/fhir"  # the FHIR base of the TestClient's app
LOINC = "http://loinc.org"
GLUCOSE, ALT, AST = "2345-7", "1742-6", "1920-8"  # LAB-GLU 30 days, LAB-ALT/AST 14 days


def day(offset: int) -> str:
    return (local_day(utc_now()) + timedelta(days=offset)).isoformat()


def institution(org_id: str, *, passed: bool) -> dict[str, Any]:
    return {
        "resourceType": "Organization",
        "id": org_id,
        "name": f"测试医院 {org_id}",
        "extension": [
            {"url": REGION_URL, "valueCode": "chongqing"},
            quality_control_extension(
                "lab-chemistry", "NCCL EQA", "current", passed, day(-365), day(365)
            ),
        ],
    }


def resident(client: TestClient, number: str | None = None) -> dict[str, str]:
    """A resident with a recognisable glucose (5 days old, QC passed), an expired ALT
    (40 days, window 14) and an AST from an institution without quality control."""
    for org in (institution("q1", passed=True), institution("q2", passed=False)):
        response = client.put(f"/fhir/Organization/{org['id']}", json=org, headers=FHIR_JSON)
        assert response.status_code in (200, 201), response.text
    number = number or make_id_number()
    patient = {"resourceType": "Patient", "gender": "male", "identifier": [id_identifier(number)]}
    created = client.post("/fhir/Patient", json=patient, headers=FHIR_JSON)
    assert created.status_code == 201, created.text
    ids = {"patient": created.json()["id"], "number": number}
    for name, body in {
        "glucose": lab(ids["patient"], GLUCOSE, day(-5), "q1"),
        "alt": lab(ids["patient"], ALT, day(-40), "q1"),
        "ast": lab(ids["patient"], AST, day(-3), "q2"),
    }.items():
        response = client.post("/fhir/Observation", json=body, headers=FHIR_JSON)
        assert response.status_code == 201, response.text
        ids[name] = response.json()["id"]
    return ids


def draft(order_id: str, loinc: str, patient_id: str) -> dict[str, Any]:
    return {
        "resourceType": "ServiceRequest",
        "id": order_id,
        "status": "draft",
        "intent": "order",
        "code": {"coding": [{"system": LOINC, "code": loinc}]},
        "subject": {"reference": f"Patient/{patient_id}"},
    }


MEDICATION = {  # an order that is no test (as in the specification's examples)
    "resourceType": "MedicationRequest",
    "id": "smart-MedicationRequest-103",
    "status": "draft",
    "intent": "order",
    "medicationCodeableConcept": {
        "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "617993"}]
    },
}


def hook_request(
    hook: str,
    patient_id: str,
    orders: list[dict[str, Any]],
    *,
    selections: list[str] | None = None,
    fhir_server: str | None = OWN_SERVER,
    prefetch: dict[str, Any] | None = None,
    token: str | None = None,
) -> dict[str, Any]:
    context: dict[str, Any] = {
        "userId": "PractitionerRole/123",
        "patientId": patient_id,
        "encounterId": "89284",
        "draftOrders": {"resourceType": "Bundle", "entry": [{"resource": o} for o in orders]},
    }
    if hook == "order-select":
        context["selections"] = selections or [f"{o['resourceType']}/{o['id']}" for o in orders]
    body: dict[str, Any] = {"hookInstance": str(uuid.uuid4()), "hook": hook, "context": context}
    if fhir_server is not None:
        body["fhirServer"] = fhir_server
    if token is not None:
        body["fhirAuthorization"] = {
            "access_token": token, "token_type": "Bearer", "expires_in": 300,
            "scope": "user/Patient.read", "subject": "ehr-service-cds",
        }  # fmt: skip
    if prefetch is not None:
        body["prefetch"] = prefetch
    return body


SERVICE = {"order-select": "recognition-order-select", "order-sign": "recognition-order-sign"}


def call(client: TestClient, hook: str, body: dict[str, Any], **headers: str) -> Any:
    return client.post(f"/cds-services/{SERVICE[hook]}", json=body, headers=headers)


def foreign_patient(ids: dict[str, str], foreign_id: str = "1288992") -> dict[str, Any]:
    """The resident as a hospital's own FHIR server knows them: its id, the ID number."""
    return {
        "resourceType": "Patient",
        "id": foreign_id,
        "identifier": [{"system": ID_SYSTEM, "value": ids["number"]}],
        "gender": "male",
    }
