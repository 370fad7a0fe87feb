"""batch and transaction bundles (R4 §3.1.0.11)."""

from __future__ import annotations

import base64

import orjson
from fastapi.testclient import TestClient

from ehr_service.interactions.context import Services
from tests.helpers import FHIR_JSON, issue_expressions, observation, patient, snapshot

P_URL = "urn:uuid:5f0c1f7e-2a53-4c39-9d7c-1f6c8f8f0a01"
E_URL = "urn:uuid:5f0c1f7e-2a53-4c39-9d7c-1f6c8f8f0a02"


def tx(*entries: dict, kind: str = "transaction") -> dict:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def post(resource: dict, full_url: str | None = None) -> dict:
    entry: dict = {
        "resource": resource,
        "request": {"method": "POST", "url": resource["resourceType"]},
    }
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def test_transaction_rewrites_placeholders_everywhere(client: TestClient) -> None:
    encounter = {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"code": "AMB"},
        "subject": {"reference": P_URL},
    }
    obs = observation(P_URL)
    obs["encounter"] = {"reference": E_URL}
    obs["derivedFrom"] = [{"reference": E_URL}]
    bundle = tx(post(obs), post(encounter, E_URL), post(patient(), P_URL))
    response = client.post("/fhir", json=bundle, headers=FHIR_JSON)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["type"] == "transaction-response"
    locations = [e["response"]["location"] for e in body["entry"]]
    assert [loc.split("/")[0] for loc in locations] == ["Observation", "Encounter", "Patient"]
    for entry in body["entry"]:
        assert entry["response"]["status"] == "201 Created"
        assert entry["response"]["etag"] == 'W/"1"'
        assert entry["response"]["location"].endswith("/_history/1")
    patient_ref = "/".join(locations[2].split("/")[:2])
    encounter_ref = "/".join(locations[1].split("/")[:2])
    stored = client.get(f"/fhir/{'/'.join(locations[0].split('/')[:2])}").json()
    assert stored["subject"]["reference"] == patient_ref
    assert stored["encounter"]["reference"] == encounter_ref
    assert stored["derivedFrom"][0]["reference"] == encounter_ref
    assert "urn:uuid" not in response.text


def test_transaction_with_one_invalid_entry_changes_nothing(
    client: TestClient, services: Services
) -> None:
    client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON)
    before = snapshot(services)
    bad = observation(P_URL)
    del bad["status"]
    response = client.post("/fhir", json=tx(post(patient(), P_URL), post(bad)), headers=FHIR_JSON)
    assert response.status_code == 400
    outcome = response.json()
    assert "Bundle.entry[1].resource.status" in issue_expressions(outcome)
    assert snapshot(services) == before


def test_transaction_failure_late_in_processing_rolls_back(
    client: TestClient, services: Services
) -> None:
    existing = client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON).json()
    before = snapshot(services)
    stale_update = {
        "resource": {**existing, "gender": "male"},
        "request": {"method": "PUT", "url": f"Patient/{existing['id']}", "ifMatch": 'W/"4"'},
    }
    response = client.post("/fhir", json=tx(post(patient()), stale_update), headers=FHIR_JSON)
    assert response.status_code == 412
    assert snapshot(services) == before


def test_transaction_processing_order_and_mixed_interactions(client: TestClient) -> None:
    doomed = client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON).json()
    kept = client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON).json()
    patch_ops = [{"op": "replace", "path": "/gender", "value": "other"}]
    binary = {
        "resourceType": "Binary",
        "contentType": "application/json-patch+json",
        "data": base64.b64encode(orjson.dumps(patch_ops)).decode(),
    }
    bundle = tx(
        {"request": {"method": "GET", "url": f"Patient/{kept['id']}"}},
        {"resource": binary, "request": {"method": "PATCH", "url": f"Patient/{kept['id']}"}},
        {"request": {"method": "DELETE", "url": f"Patient/{doomed['id']}"}},
        {
            "resource": patient(id="fixed-id"),
            "request": {"method": "PUT", "url": "Patient/fixed-id"},
        },
    )
    response = client.post("/fhir", json=bundle, headers=FHIR_JSON)
    assert response.status_code == 200, response.text
    entries = response.json()["entry"]
    # GET runs after the PATCH (spec order), so it sees the patched version.
    assert entries[0]["resource"]["gender"] == "other"
    assert entries[0]["response"]["status"] == "200 OK"
    assert entries[1]["response"]["status"] == "200 OK"
    assert entries[2]["response"]["status"] == "204 No Content"
    assert entries[3]["response"]["status"] == "201 Created"
    assert client.get(f"/fhir/Patient/{doomed['id']}").status_code == 410
    assert client.get("/fhir/Patient/fixed-id").status_code == 200


def test_transaction_rejections(client: TestClient, services: Services) -> None:
    before = snapshot(services)
    dangling = observation("urn:uuid:0e6b1d3e-0000-4000-8000-000000000000")
    cases = [
        (tx(post(dangling)), 400),
        (tx(post(patient(), P_URL), post(patient(), P_URL)), 400),
        (
            tx(
                {"resource": patient(id="a"), "request": {"method": "PUT", "url": "Patient/a"}},
                {"request": {"method": "DELETE", "url": "Patient/a"}},
            ),
            400,
        ),
        (tx({"resource": patient()}), 400),
        (tx({"request": {"method": "POST", "url": "Unicorn"}, "resource": patient()}), 404),
        (tx({"request": {"method": "GET", "url": "Observation?code:in=http://vs"}}), 501),
        ({"resourceType": "Bundle", "type": "collection"}, 400),
        (patient(), 400),
    ]
    for body, status in cases:
        response = client.post("/fhir", json=body, headers=FHIR_JSON)
        assert response.status_code == status, (body, response.text)
        assert response.json()["resourceType"] == "OperationOutcome"
    assert snapshot(services) == before


def test_bundle_entry_limit_is_413(make_client) -> None:  # type: ignore[no-untyped-def]
    client = make_client(max_bundle_entries=3)
    response = client.post(
        "/fhir", json=tx(*[post(patient()) for _ in range(4)]), headers=FHIR_JSON
    )
    assert response.status_code == 413
    assert response.json()["issue"][0]["code"] == "too-long"


def test_batch_entries_succeed_or_fail_alone(client: TestClient) -> None:
    bad = observation("Patient/x")
    del bad["status"]
    bundle = tx(
        post(patient()),
        post(bad),
        {"request": {"method": "GET", "url": "Patient/does-not-exist"}},
        {"request": {"method": "GET", "url": "metadata"}},
        kind="batch",
    )
    response = client.post("/fhir", json=bundle, headers=FHIR_JSON)
    assert response.status_code == 200
    body = response.json()
    assert body["type"] == "batch-response"
    statuses = [e["response"]["status"] for e in body["entry"]]
    assert statuses == ["201 Created", "400 Bad Request", "404 Not Found", "200 OK"]
    assert body["entry"][1]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    created = body["entry"][0]["response"]["location"].split("/_history")[0]
    assert client.get(f"/fhir/{created}").status_code == 200


def test_prefer_minimal_applies_to_entries(client: TestClient) -> None:
    response = client.post(
        "/fhir", json=tx(post(patient())), headers={**FHIR_JSON, "Prefer": "return=minimal"}
    )
    entry = response.json()["entry"][0]
    assert "resource" not in entry and entry["response"]["status"] == "201 Created"


def test_wrongly_typed_bundle_fields_are_400(client: TestClient) -> None:
    for body in (
        {"resourceType": "Bundle", "type": {}, "entry": []},
        {"resourceType": "Bundle", "type": "batch", "entry": [[None]]},
        {"resourceType": "Bundle", "type": "batch", "entry": {}},
        tx({"request": {"method": ["POST"], "url": "Patient"}, "resource": patient()}),
        tx({"request": {"method": "POST", "url": 5}, "resource": patient()}),
    ):
        response = client.post("/fhir", json=body, headers=FHIR_JSON)
        assert response.status_code == 400, (body, response.text)


def test_wrongly_typed_patch_operation_is_400(client: TestClient) -> None:
    pid = client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON).json()["id"]
    response = client.patch(
        f"/fhir/Patient/{pid}",
        json=[{"op": ["add"], "path": "/x"}],
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert response.status_code == 400
