"""Consent: a resident's refusal hides their record from the refused organisation or
region on reads and searches; revoking restores it; what cannot be read refuses all."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from ehr_service.app import create_app
from ehr_service.interactions.context import Services
from tests.helpers import FHIR_JSON, bearer, observation, patient

REGION = "urn:ehr-service:region"


def _consent(
    patient_id: str, actors: list[dict[str, Any]], status: str = "active"
) -> dict[str, Any]:
    return {
        "resourceType": "Consent",
        "status": status,
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
        "provision": {"type": "deny", "actor": actors},
    }


def _actor(reference: dict[str, Any]) -> dict[str, Any]:
    return {
        "role": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                    "code": "IRCP",
                }
            ]
        },
        "reference": reference,
    }


def _as(services: Services, **claims: Any) -> TestClient:
    return TestClient(
        create_app(services=services),
        raise_server_exceptions=False,
        headers=bearer(services.settings, "user/*.rs", **claims),
    )


def test_refusal_of_the_partner_region_and_its_revocation(
    client: TestClient, services: Services
) -> None:
    pid = client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON).json()["id"]
    other = client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON).json()["id"]
    obs = client.post("/fhir/Observation", json=observation(f"Patient/{pid}"), headers=FHIR_JSON)
    client.post("/fhir/Observation", json=observation(f"Patient/{other}"), headers=FHIR_JSON)
    consent = client.post(
        "/fhir/Consent",
        json=_consent(pid, [_actor({"identifier": {"system": REGION, "value": "sichuan"}})]),
        headers=FHIR_JSON,
    ).json()
    with _as(services, region="sichuan", organization="Organization/huaxi") as partner:
        assert partner.get(f"/fhir/Patient/{pid}").status_code == 403
        assert partner.get(f"/fhir/Observation/{obs.json()['id']}").json()["issue"][0]["code"] == (
            "suppressed"
        )
        assert partner.get(f"/fhir/Patient/{pid}/$everything").status_code == 403
        found = partner.get("/fhir/Observation").json()
        assert found["total"] == 1
        assert found["entry"][0]["resource"]["subject"] == {"reference": f"Patient/{other}"}
        assert partner.get(f"/fhir/Patient/{other}").status_code == 200
    with _as(services, region="chongqing", organization="Organization/cq-first") as local:
        assert local.get(f"/fhir/Patient/{pid}").status_code == 200
        assert local.get("/fhir/Observation").json()["total"] == 2
    revoked = {**consent, "status": "inactive"}
    assert (
        client.put(f"/fhir/Consent/{consent['id']}", json=revoked, headers=FHIR_JSON).status_code
        == 200
    )
    with _as(services, region="sichuan") as partner:
        assert partner.get(f"/fhir/Patient/{pid}").status_code == 200


def test_refusal_of_a_named_organisation_and_fail_closed(
    client: TestClient, services: Services
) -> None:
    pid = client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON).json()["id"]
    client.post(
        "/fhir/Consent",
        json=_consent(pid, [_actor({"reference": "Organization/clinic-7"})]),
        headers=FHIR_JSON,
    )
    with _as(services, organization="Organization/clinic-7") as refused:
        assert refused.get(f"/fhir/Patient/{pid}").status_code == 403
        assert refused.get(f"/fhir/Patient?_id={pid}").json()["total"] == 0
    with _as(services, organization="Organization/clinic-8") as allowed:
        assert allowed.get(f"/fhir/Patient/{pid}").status_code == 200
    # an actor this server cannot evaluate refuses everyone subject to consent
    second = client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON).json()["id"]
    client.post(
        "/fhir/Consent",
        json=_consent(second, [_actor({"reference": "Practitioner/dr-x"})]),
        headers=FHIR_JSON,
    )
    with _as(services, organization="Organization/clinic-8") as anyone:
        assert anyone.get(f"/fhir/Patient/{second}").status_code == 403
    with TestClient(
        create_app(services=services),
        raise_server_exceptions=False,
        headers=bearer(services.settings, "patient/*.rs", patient=second),
    ) as resident:
        assert resident.get(f"/fhir/Patient/{second}").status_code == 200
