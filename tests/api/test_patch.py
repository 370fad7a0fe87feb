"""JSON Patch (RFC 6902) on resources."""

from __future__ import annotations

from fastapi.testclient import TestClient

from ehr_service.interactions.context import Services
from tests.helpers import FHIR_JSON, patient, snapshot

PATCH = {"Content-Type": "application/json-patch+json"}


def _created(client: TestClient) -> str:
    return client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON).json()["id"]


def test_patch_applies_and_versions(client: TestClient) -> None:
    pid = _created(client)
    ops = [
        {"op": "replace", "path": "/gender", "value": "male"},
        {"op": "add", "path": "/active", "value": True},
    ]
    response = client.patch(f"/fhir/Patient/{pid}", json=ops, headers=PATCH)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["gender"] == "male" and body["active"] is True
    assert body["meta"]["versionId"] == "2"
    history = client.get(f"/fhir/Patient/{pid}/_history").json()
    assert history["entry"][0]["request"]["method"] == "PATCH"


def test_patch_errors_change_nothing(client: TestClient, services: Services) -> None:
    pid = _created(client)
    before = snapshot(services)
    cases = [
        ({"op": "replace"}, PATCH, 400),  # not an array
        ([{"op": "explode", "path": "/x"}], PATCH, 400),
        ([{"op": "test", "path": "/gender", "value": "male"}], PATCH, 422),
        ([{"op": "remove", "path": "/nothing/here"}], PATCH, 422),
        ([{"op": "replace", "path": "/id", "value": "other"}], PATCH, 422),
        ([{"op": "replace", "path": "/resourceType", "value": "Group"}], PATCH, 422),
        ([{"op": "replace", "path": "/gender", "value": 5}], PATCH, 400),  # invalid result
        (
            [{"op": "replace", "path": "/gender", "value": "male"}],
            {"Content-Type": "text/plain"},
            415,
        ),
    ]
    for ops, headers, status in cases:
        response = client.patch(f"/fhir/Patient/{pid}", json=ops, headers=headers)
        assert response.status_code == status, (ops, response.text)
        assert response.json()["resourceType"] == "OperationOutcome"
    stale = client.patch(
        f"/fhir/Patient/{pid}",
        json=[{"op": "remove", "path": "/gender"}],
        headers={**PATCH, "If-Match": 'W/"3"'},
    )
    assert stale.status_code == 412
    assert (
        client.patch(
            "/fhir/Patient/missing", json=[{"op": "remove", "path": "/gender"}], headers=PATCH
        ).status_code
        == 404
    )
    assert snapshot(services) == before
