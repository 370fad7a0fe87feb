"""Transport-level errors: media types, sizes, unknown routes, request ids, 500s."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ehr_service.app import create_app
from ehr_service.interactions import read
from ehr_service.interactions.context import Services
from tests.helpers import FHIR_JSON, bearer, patient, snapshot


def test_a_body_neither_json_nor_xml_is_415(client: TestClient, services: Services) -> None:
    before = snapshot(services)
    response = client.post(
        "/fhir/Patient",
        content=b"resourceType: Patient",
        headers={"Content-Type": "application/yaml"},
    )
    assert response.status_code == 415
    assert response.json()["resourceType"] == "OperationOutcome"
    assert snapshot(services) == before


def test_accept_without_json_or_xml_is_406(client: TestClient) -> None:
    response = client.get("/fhir/metadata", headers={"Accept": "text/html"})
    assert response.status_code == 406
    assert response.json()["issue"][0]["code"] == "not-supported"
    assert client.get("/fhir/metadata?_format=html").status_code == 406
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
    assert statement["patchFormat"] == [
        "application/json-patch+json",
        "application/merge-patch+json",
        "application/fhir+json",
        "application/fhir+xml",
    ]


def test_a_405_names_the_methods_of_the_resource_at_that_path(client: TestClient) -> None:
    """Allow lists what the most specific routes at the path offer: /fhir/metadata is
    not also the generic /fhir/{type}."""
    expected = {
        "/fhir/metadata": "GET, HEAD",
        "/fhir/.well-known/smart-configuration": "GET, HEAD",
        "/fhir/Patient/$match": "POST",
        "/fhir/Patient/p1": "DELETE, GET, HEAD, PATCH, PUT",
    }
    for path, allow in expected.items():
        answer = client.request("OPTIONS", path)
        assert answer.status_code == 405, path
        assert answer.headers["allow"] == allow, path


def test_head_answers_what_get_would_without_a_body(client: TestClient) -> None:
    pid = client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON).json()["id"]
    for path in ("/fhir/metadata", f"/fhir/Patient/{pid}", "/fhir/Patient?_count=1"):
        got, head = client.get(path), client.head(path)
        assert head.status_code == got.status_code == 200, path
        assert head.content == b"", path
        assert head.headers["content-type"] == got.headers["content-type"], path
        if "etag" in got.headers:
            assert head.headers["etag"] == got.headers["etag"], path
    missing = client.head("/fhir/Patient/not-there")
    assert missing.status_code == 404 and missing.content == b""


def test_post_to_the_base_with_a_trailing_slash_is_not_redirected(client: TestClient) -> None:
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "metadata"}}]}  # fmt: skip
    answer = client.post("/fhir/", json=bundle, headers=FHIR_JSON, follow_redirects=False)
    assert answer.status_code == 200, answer.text
    assert answer.json()["type"] == "batch-response"


def test_other_fhir_versions_are_refused(client: TestClient) -> None:
    r3 = client.get("/fhir/metadata", headers={"Accept": "application/fhir+json; fhirVersion=3.0"})
    assert r3.status_code == 406 and r3.json()["resourceType"] == "OperationOutcome"
    r4 = client.get("/fhir/metadata", headers={"Accept": "application/fhir+json; fhirVersion=4.0"})
    assert r4.status_code == 200
    either = "application/fhir+json; fhirVersion=3.0, application/fhir+json; fhirVersion=4.0"
    assert client.get("/fhir/metadata", headers={"Accept": either}).status_code == 200
    stu3 = {"Content-Type": "application/fhir+json; fhirVersion=3.0"}
    body = client.post("/fhir/Patient", json=patient(), headers=stu3)
    assert body.status_code == 415 and "4.0" in body.text


def test_cors_is_off_by_default_and_answers_preflights_when_set(
    client: TestClient, make_services: Any
) -> None:
    origin = {"Origin": "https://app.example"}
    plain = client.get("/fhir/metadata", headers=origin)
    assert "access-control-allow-origin" not in plain.headers
    assert client.options("/fhir/metadata", headers=origin).status_code == 405
    services = make_services(cors_origins=["https://app.example"])
    with TestClient(create_app(services=services), headers=bearer(services.settings)) as app:
        preflight = app.options("/fhir/Patient", headers={
            **origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, prefer"})  # fmt: skip
        assert preflight.status_code == 200, preflight.text
        assert preflight.headers["access-control-allow-origin"] == "https://app.example"
        assert "POST" in preflight.headers["access-control-allow-methods"]
        created = app.post("/fhir/Patient", json=patient(), headers={**FHIR_JSON, **origin})
        assert created.status_code == 201
        assert created.headers["access-control-allow-origin"] == "https://app.example"
        assert "Location" in created.headers["access-control-expose-headers"]
        other = app.get("/fhir/metadata", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
        refused = app.options("/fhir/Patient", headers={
            "Origin": "https://evil.example", "Access-Control-Request-Method": "GET"})  # fmt: skip
        assert refused.status_code == 400
