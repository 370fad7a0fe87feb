"""PATCH with JSON merge patch and FHIRPath Patch beside JSON Patch: by media type,
in XML, conditionally and in bundles; failures change nothing."""

from __future__ import annotations

import base64
import json
from typing import Any

from fastapi.testclient import TestClient

from ehr_service.fhir.xml import json_to_xml
from ehr_service.interactions.context import Services
from tests.helpers import FHIR_JSON, patient, snapshot

MERGE = {"Content-Type": "application/merge-patch+json"}


def _created(client: TestClient) -> str:
    body = patient(gender="female", identifier=[{"system": "urn:mrn", "value": "m-1"}])
    response = client.post("/fhir/Patient", json=body, headers=FHIR_JSON)
    assert response.status_code == 201
    return str(response.json()["id"])


def _fhirpath(*operations: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "Parameters",
        "parameter": [{"name": "operation", "part": parts} for parts in operations],
    }


REPLACE_GENDER = [
    {"name": "type", "valueCode": "replace"},
    {"name": "path", "valueString": "Patient.gender"},
    {"name": "value", "valueCode": "male"},
]


def test_merge_patch_and_what_fhirpy_sends(client: TestClient) -> None:
    pid = _created(client)
    merged = client.patch(
        f"/fhir/Patient/{pid}", json={"gender": "male", "birthDate": "1990-03-07"}, headers=MERGE
    )
    assert merged.status_code == 200, merged.text
    body = merged.json()
    assert body["gender"] == "male" and body["birthDate"] == "1990-03-07"
    assert body["meta"]["versionId"] == "2" and body["identifier"][0]["value"] == "m-1"
    # fhirpy's resource.patch(): PATCH, Content-Type application/json, the changed fields
    fhirpy = client.patch(
        f"/fhir/Patient/{pid}",
        json={"resourceType": "Patient", "birthDate": None, "active": True},
        headers={"Content-Type": "application/json"},
    )
    assert fhirpy.status_code == 200, fhirpy.text
    assert "birthDate" not in fhirpy.json() and fhirpy.json()["active"] is True


def test_fhirpath_patch_in_json_and_xml(client: TestClient) -> None:
    pid = _created(client)
    response = client.patch(
        f"/fhir/Patient/{pid}", json=_fhirpath(REPLACE_GENDER), headers=FHIR_JSON
    )
    assert response.status_code == 200, response.text
    assert response.json()["gender"] == "male"
    add_name = [
        {"name": "type", "valueCode": "add"},
        {"name": "path", "valueString": "Patient"},
        {"name": "name", "valueString": "name"},
        {"name": "value", "part": [{"name": "family", "valueString": "Li"}]},
    ]
    xml = json_to_xml(json.dumps(_fhirpath(add_name)).encode())
    response = client.patch(
        f"/fhir/Patient/{pid}",
        content=xml,
        headers={"Content-Type": "application/fhir+xml", "Accept": "application/fhir+json"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["name"][-1] == {"family": "Li"}
    assert response.json()["meta"]["versionId"] == "3"


def test_conditional_fhirpath_patch(client: TestClient) -> None:
    pid = _created(client)
    response = client.patch(
        "/fhir/Patient", params={"identifier": "urn:mrn|m-1"}, json=_fhirpath(REPLACE_GENDER),
        headers=FHIR_JSON,
    )  # fmt: skip
    assert response.status_code == 200, response.text
    assert client.get(f"/fhir/Patient/{pid}").json()["gender"] == "male"


def test_patches_in_a_transaction(client: TestClient) -> None:
    pid, other = _created(client), _created(client)
    merge = base64.b64encode(json.dumps({"active": False}).encode()).decode()
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": _fhirpath(REPLACE_GENDER),
             "request": {"method": "PATCH", "url": f"Patient/{pid}"}},
            {"resource": {"resourceType": "Binary", "contentType": "application/merge-patch+json",
                          "data": merge},
             "request": {"method": "PATCH", "url": f"Patient/{other}"}},
        ],
    }  # fmt: skip
    response = client.post("/fhir", json=bundle, headers=FHIR_JSON)
    assert response.status_code == 200, response.text
    assert client.get(f"/fhir/Patient/{pid}").json()["gender"] == "male"
    assert client.get(f"/fhir/Patient/{other}").json()["active"] is False


def test_bad_patches_change_nothing(client: TestClient, services: Services) -> None:
    pid = _created(client)
    before = snapshot(services)
    cases = [
        (["not", "an", "object"], MERGE, 400),  # a merge patch is an object
        ({"id": "other"}, MERGE, 422),
        ({"resourceType": "Group"}, MERGE, 422),
        ({"gender": "cat"}, MERGE, 400),  # an invalid result
        (_fhirpath([{"name": "type", "valueCode": "explode"}]), FHIR_JSON, 400),
        (_fhirpath([*REPLACE_GENDER[:2]]), FHIR_JSON, 400),  # no value
        (
            _fhirpath([{"name": "type", "valueCode": "replace"},
                       {"name": "path", "valueString": "Patient.nothing"},
                       {"name": "value", "valueString": "x"}]),
            FHIR_JSON,
            422,
        ),
        ({"resourceType": "Parameters"}, FHIR_JSON, 400),
    ]  # fmt: skip
    for body, headers, status in cases:
        response = client.patch(f"/fhir/Patient/{pid}", json=body, headers=headers)
        assert response.status_code == status, (body, response.text)
        assert response.json()["resourceType"] == "OperationOutcome"
    assert snapshot(services) == before


def test_capability_lists_the_patch_formats(client: TestClient) -> None:
    formats = client.get("/fhir/metadata").json()["patchFormat"]
    assert {"application/json-patch+json", "application/merge-patch+json"} <= set(formats)
    assert "application/fhir+json" in formats  # FHIRPath Patch
