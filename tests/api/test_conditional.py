"""Conditional create, update, patch, delete and conditional references, both backends."""

from __future__ import annotations

import asyncio

import httpx
from fastapi.testclient import TestClient

from ehr_service.app import create_app
from ehr_service.interactions.context import Services
from tests.helpers import FHIR_JSON, bearer, observation, patient, snapshot

MRN = {"identifier": [{"system": "urn:mrn", "value": "C-42"}]}


def test_conditional_create(client: TestClient, services: Services) -> None:
    headers = {**FHIR_JSON, "If-None-Exist": "identifier=urn:mrn|C-42"}
    first = client.post("/fhir/Patient", json=patient(**MRN), headers=headers)
    assert first.status_code == 201
    again = client.post("/fhir/Patient", json=patient(**MRN), headers=headers)
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    client.post("/fhir/Patient", json=patient(**MRN), headers=FHIR_JSON)  # a duplicate
    before = snapshot(services)
    several = client.post("/fhir/Patient", json=patient(**MRN), headers=headers)
    assert several.status_code == 412
    assert snapshot(services) == before
    unknown = client.post(
        "/fhir/Patient", json=patient(), headers={**FHIR_JSON, "If-None-Exist": "shoe-size=42"}
    )
    assert unknown.status_code == 400


def test_twenty_parallel_conditional_creates_make_one_resource(services: Services) -> None:
    async def race() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=create_app(services=services))
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t", headers=bearer(services.settings)
        ) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        "/fhir/Patient",
                        json=patient(**MRN),
                        headers={**FHIR_JSON, "If-None-Exist": "identifier=urn:mrn|C-42"},
                    )
                    for _ in range(20)
                )
            )

    responses = asyncio.run(race())
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 19 + [201], statuses
    assert len({r.json()["id"] for r in responses}) == 1
    current, _ = snapshot(services)
    assert len([row for row in current if row[0] == "Patient"]) == 1


def test_conditional_update_patch_delete(client: TestClient) -> None:
    created = client.put(
        "/fhir/Patient?identifier=urn:mrn|C-42", json=patient(**MRN), headers=FHIR_JSON
    )
    assert created.status_code == 201
    pid = created.json()["id"]
    updated = client.put(
        "/fhir/Patient?identifier=urn:mrn|C-42",
        json=patient(gender="male", **MRN),
        headers=FHIR_JSON,
    )
    assert updated.status_code == 200 and updated.json()["id"] == pid
    assert updated.json()["meta"]["versionId"] == "2"
    mismatched = client.put(
        "/fhir/Patient?identifier=urn:mrn|C-42", json=patient(id="other", **MRN), headers=FHIR_JSON
    )
    assert mismatched.status_code == 400
    patched = client.patch(
        "/fhir/Patient?identifier=urn:mrn|C-42",
        json=[{"op": "replace", "path": "/gender", "value": "other"}],
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert patched.status_code == 200 and patched.json()["gender"] == "other"
    missing = client.patch(
        "/fhir/Patient?identifier=urn:mrn|nobody",
        json=[{"op": "remove", "path": "/gender"}],
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert missing.status_code == 404
    assert client.put("/fhir/Patient", json=patient(), headers=FHIR_JSON).status_code == 400
    deleted = client.delete("/fhir/Patient?identifier=urn:mrn|C-42")
    assert deleted.status_code == 204
    assert client.get(f"/fhir/Patient/{pid}").status_code == 410
    assert client.delete("/fhir/Patient?identifier=urn:mrn|C-42").status_code == 204
    client.post("/fhir/Patient", json=patient(**MRN), headers=FHIR_JSON)
    client.post("/fhir/Patient", json=patient(**MRN), headers=FHIR_JSON)
    assert client.delete("/fhir/Patient?identifier=urn:mrn|C-42").status_code == 412


def test_conditional_references_and_if_none_exist_in_a_transaction(client: TestClient) -> None:
    existing = client.post("/fhir/Patient", json=patient(**MRN), headers=FHIR_JSON).json()
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:8d3c0b5e-0000-4000-8000-000000000001",
                "resource": patient(**MRN),
                "request": {
                    "method": "POST",
                    "url": "Patient",
                    "ifNoneExist": "identifier=urn:mrn|C-42",
                },
            },
            {
                "resource": observation("urn:uuid:8d3c0b5e-0000-4000-8000-000000000001"),
                "request": {"method": "POST", "url": "Observation"},
            },
            {
                "resource": observation("Patient?identifier=urn:mrn|C-42"),
                "request": {"method": "POST", "url": "Observation"},
            },
            {
                "resource": {**observation("Patient/x"), "status": "amended"},
                "request": {"method": "PUT", "url": "Observation?code=2345-7&status=amended"},
            },
        ],
    }
    response = client.post("/fhir", json=bundle, headers=FHIR_JSON)
    assert response.status_code == 200, response.text
    entries = response.json()["entry"]
    assert entries[0]["response"]["status"] == "200 OK"  # found, not created
    for entry in entries[1:3]:
        stored = client.get(f"/fhir/{entry['response']['location'].split('/_history')[0]}")
        assert stored.json()["subject"]["reference"] == f"Patient/{existing['id']}"
    assert entries[3]["response"]["status"] == "201 Created"
    ambiguous = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": observation("Patient?identifier=urn:mrn|nobody"),
                "request": {"method": "POST", "url": "Observation"},
            }
        ],
    }
    assert client.post("/fhir", json=ambiguous, headers=FHIR_JSON).status_code == 404


def test_two_identical_conditional_creates_in_one_transaction_are_refused(
    client: TestClient, services: Services
) -> None:
    before = snapshot(services)
    entry = {
        "resource": patient(**MRN),
        "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=urn:mrn|C-42"},
    }
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {**entry, "fullUrl": "urn:uuid:8d3c0b5e-0000-4000-8000-00000000000a"},
            {**entry, "fullUrl": "urn:uuid:8d3c0b5e-0000-4000-8000-00000000000b"},
            {
                "resource": observation("urn:uuid:8d3c0b5e-0000-4000-8000-00000000000b"),
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    }
    assert client.post("/fhir", json=bundle, headers=FHIR_JSON).status_code == 400
    assert snapshot(services) == before
