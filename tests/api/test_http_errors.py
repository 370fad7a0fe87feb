"""Transport-level errors: media types, sizes, unknown routes, request ids, 500s."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient

from ehr_service.interactions import read
from ehr_service.interactions.context import Services
from tests.helpers import FHIR_JSON, patient, snapshot


def test_xml_body_is_415(client: TestClient, services: Services) -> None:
    before = snapshot(services)
    response = client.post(
        "/fhir/Patient",
        content=b"<Patient xmlns='http://hl7.org/fhir'/>",
        headers={"Content-Type": "application/fhir+xml"},
    )
    assert response.status_code == 415
    assert response.json()["resourceType"] == "OperationOutcome"
    assert snapshot(services) == before


def test_accept_without_json_is_406(client: TestClient) -> None:
    response = client.get("/fhir/metadata", headers={"Accept": "application/fhir+xml"})
    assert response.status_code == 406
    assert response.json()["issue"][0]["code"] == "not-supported"
    assert client.get("/fhir/metadata?_format=xml").status_code == 406
    assert (
        client.get("/fhir/metadata", headers={"Accept": "text/html, */*;q=0.8"}).status_code == 200
    )


def test_malformed_json_is_400(client: TestClient) -> None:
    response = client.post(
        "/fhir/Patient", content=b'{"resourceType": "Patient",', headers=FHIR_JSON
    )
    assert response.status_code == 400
    assert response.json()["issue"][0]["code"] == "structure"
    assert client.post("/fhir/Patient", content=b"[1,2]", headers=FHIR_JSON).status_code == 400


def test_body_over_the_limit_is_413(make_client) -> None:  # type: ignore[no-untyped-def]
    client = make_client(max_body_bytes=2048)
    big = patient(name=[{"text": "x" * 4000}])
    response = client.post("/fhir/Patient", json=big, headers=FHIR_JSON)
    assert response.status_code == 413
    assert response.json()["issue"][0]["code"] == "too-long"

    def chunks():  # type: ignore[no-untyped-def]
        yield b'{"resourceType":"Patient","name":[{"text":"'
        for _ in range(10):
            yield b"y" * 500
        yield b'"}]}'

    streamed = client.post("/fhir/Patient", content=chunks(), headers=FHIR_JSON)
    assert streamed.status_code == 413


def test_unknown_route_and_method(client: TestClient) -> None:
    response = client.get("/fhir/Patient/1/_nothing/2/3")
    assert response.status_code == 404
    assert response.json()["resourceType"] == "OperationOutcome"
    not_allowed = client.delete("/fhir/metadata")
    assert not_allowed.status_code == 405
    assert not_allowed.json()["resourceType"] == "OperationOutcome"


def test_request_id_is_echoed_or_generated(client: TestClient) -> None:
    echoed = client.get("/fhir/metadata", headers={"X-Request-Id": "abc-123"})
    assert echoed.headers["x-request-id"] == "abc-123"
    generated = client.get("/fhir/metadata")
    assert len(generated.headers["x-request-id"]) == 32
    hostile = client.get("/fhir/metadata", headers={"X-Request-Id": "a b\tc<script>"})
    assert hostile.headers["x-request-id"] != "a b\tc<script>"


def test_unexpected_error_is_a_clean_500(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(read, "read", explode)
    with caplog.at_level(logging.ERROR, logger="ehr_service.api"):
        response = client.get("/fhir/Patient/x", headers={"X-Request-Id": "req-500"})
    assert response.status_code == 500
    assert response.headers["x-request-id"] == "req-500"
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "secret" not in response.text and "Traceback" not in response.text
    assert "req-500" in outcome["issue"][0]["diagnostics"]
    assert any("req-500" in record.getMessage() for record in caplog.records)


def test_metadata_lists_what_works(client: TestClient) -> None:
    statement = client.get("/fhir/metadata").json()
    assert statement["fhirVersion"] == "4.0.1"
    rest = statement["rest"][0]
    types = {r["type"] for r in rest["resource"]}
    assert len(types) == 147 and "Patient" in types and "MedicinalProduct" in types
    patient_entry = next(r for r in rest["resource"] if r["type"] == "Patient")
    assert {i["code"] for i in patient_entry["interaction"]} == {
        "read",
        "vread",
        "update",
        "patch",
        "delete",
        "history-instance",
        "history-type",
        "create",
        "search-type",
    }
    params = {p["name"]: p["type"] for p in patient_entry["searchParam"]}
    assert params["birthdate"] == "date" and params["identifier"] == "token"
    assert params["_id"] == "token" and params["_lastUpdated"] == "date"
    assert "_content" not in params and "_query" not in params  # not applied: not claimed
    assert "Patient:organization" in patient_entry["searchInclude"]
    assert patient_entry["conditionalCreate"] is True
    assert {i["code"] for i in rest["interaction"]} == {"transaction", "batch", "history-system"}
    assert statement["patchFormat"] == ["application/json-patch+json"]


def test_a_405_names_the_methods_of_the_resource_at_that_path(client: TestClient) -> None:
    """Allow lists what the most specific routes at the path offer: /fhir/metadata is
    not also the generic /fhir/{type}."""
    expected = {
        "/fhir/metadata": "GET",
        "/fhir/.well-known/smart-configuration": "GET",
        "/fhir/Patient/$match": "POST",
        "/fhir/Patient/p1": "DELETE, GET, PATCH, PUT",
    }
    for path, allow in expected.items():
        answer = client.request("OPTIONS", path)
        assert answer.status_code == 405, path
        assert answer.headers["allow"] == allow, path
