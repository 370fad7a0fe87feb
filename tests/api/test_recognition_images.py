"""Imaging results pointing to retrievable images: Endpoint resources over the
FHIR API, and ``$recognizable-results`` giving the WADO-RS address of a study
whose ``endpoint`` is an active ``dicom-wado-rs`` Endpoint."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.helpers import FHIR_JSON, organization, parameters, refusal

TYPES = "http://terminology.hl7.org/CodeSystem/endpoint-connection-type"
BASE = "https://pacs.h1.example.cn/dicomweb"
UID = "1.2.156.112605.1.20260301"


def endpoint(**changes: Any) -> dict[str, Any]:
    return {
        "resourceType": "Endpoint",
        "status": "active",
        "name": "PACS h1",
        "connectionType": {"system": TYPES, "code": "dicom-wado-rs"},
        "payloadType": [{"text": "DICOM"}],
        "payloadMimeType": ["application/dicom"],
        "address": BASE,
        **changes,
    }


def study(pid: str, endpoint_ref: str | None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "ImagingStudy",
        "status": "available",
        "subject": {"reference": f"Patient/{pid}"},
        "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{UID}"}],
        "started": "2026-03-01T09:00:00+08:00",
        "series": [{
            "uid": f"{UID}.1",
            "modality": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "CT"},
            "bodySite": {"system": "http://snomed.info/sct", "code": "51185008"},
            "performer": [{"actor": {"reference": "Organization/ct1"}}],
        }],
        **extra,
    }  # fmt: skip
    if endpoint_ref is not None:
        body["endpoint"] = [{"reference": endpoint_ref}]
    return body


def create(client: TestClient, body: dict[str, Any]) -> str:
    response = client.post(f"/fhir/{body['resourceType']}", json=body, headers=FHIR_JSON)
    assert response.status_code == 201, response.text
    return f"{body['resourceType']}/{response.json()['id']}"


def image_parts(client: TestClient, pid: str) -> dict[str, dict[str, Any]]:
    response = client.post(
        f"/fhir/Patient/{pid}/$recognizable-results",
        json=parameters({"name": "item", "valueCode": "IMG-CT-CHEST"},
                        {"name": "asOf", "valueDate": "2026-03-15"}),
        headers=FHIR_JSON,
    )  # fmt: skip
    assert response.status_code == 200, response.text
    out = {}
    for result in (p for p in response.json()["parameter"] if p["name"] == "result"):
        parts = {p["name"]: p for p in result["part"]}
        key = parts["resource"]["valueReference"]["reference"] if "resource" in parts else "-"
        out[key] = {n: p.get("valueUrl") for n, p in parts.items() if n in ("endpoint", "retrieve")}
    return out


@pytest.fixture
def resident(client: TestClient) -> str:
    org = organization("ct1", category="imaging-CT")
    assert client.put("/fhir/Organization/ct1", json=org, headers=FHIR_JSON).status_code == 201
    return create(client, {"resourceType": "Patient", "gender": "female"}).partition("/")[2]


def test_endpoints_through_the_fhir_api(client: TestClient) -> None:
    made = create(client, endpoint())
    read = client.get(f"/fhir/{made}")
    assert read.status_code == 200 and read.json()["address"] == BASE
    for query in ("connection-type=dicom-wado-rs", f"connection-type={TYPES}|dicom-wado-rs",
                  "status=active", "name=PACS"):  # fmt: skip
        found = client.get(f"/fhir/Endpoint?{query}").json()
        assert [e["resource"]["id"] for e in found["entry"]] == [made.partition("/")[2]], query
    assert client.get("/fhir/Endpoint?connection-type=hl7-fhir-rest").json()["total"] == 0
    # bad Endpoints are refused with an OperationOutcome
    for bad in (endpoint(status="on"), endpoint(address=12), {"resourceType": "Endpoint"}):
        response = client.post("/fhir/Endpoint", json=bad, headers=FHIR_JSON)
        assert response.status_code in {400, 422}, response.text
        assert response.json()["resourceType"] == "OperationOutcome"


def test_recognizable_imaging_result_gives_its_images(client: TestClient, resident: str) -> None:
    wado = create(client, endpoint())
    with_uid = create(client, study(resident, wado))
    accession = [{"system": "urn:ehr-service:accession", "value": "A-1"}]
    without_uid = create(client, study(resident, wado, identifier=accession))
    no_endpoint = create(client, study(resident, None))
    found = image_parts(client, resident)
    assert found[with_uid] == {"endpoint": BASE, "retrieve": f"{BASE}/studies/{UID}"}
    assert found[without_uid] == {"endpoint": BASE}
    assert found[no_endpoint] == {}


@pytest.mark.parametrize(
    "change",
    [{"status": "off"}, {"connectionType": {"system": TYPES, "code": "dicom-qido-rs"}},
     {"connectionType": {"system": "urn:other", "code": "dicom-wado-rs"}},
     {"address": "ftp://pacs.example.cn/x"}, {"address": "urn:uuid:1"}],
)  # fmt: skip
def test_no_address_from_an_endpoint_that_is_not_wado_rs(
    client: TestClient, resident: str, change: dict[str, Any]
) -> None:
    other = create(client, endpoint(**change))
    made = create(client, study(resident, other))
    assert image_parts(client, resident)[made] == {}


def test_dangling_remote_and_deleted_endpoints(client: TestClient, resident: str) -> None:
    wado = create(client, endpoint())
    remote = create(client, study(resident, f"https://elsewhere.example.cn/fhir/{wado}"))
    dangling = create(client, study(resident, "Endpoint/nowhere"))
    wrong_type = create(client, study(resident, "Organization/ct1"))
    later = create(client, study(resident, wado))
    assert client.delete(f"/fhir/{wado}").status_code in {200, 204}
    found = image_parts(client, resident)
    for reference in (remote, dangling, wrong_type, later):
        assert found[reference] == {}, reference


def test_withheld_when_the_resident_refused(client: TestClient, resident: str) -> None:
    wado = create(client, endpoint())
    create(client, study(resident, wado))
    consent = refusal(resident, organization="Organization/h9")
    assert client.post("/fhir/Consent", json=consent, headers=FHIR_JSON).status_code == 201
    response = client.post(
        f"/fhir/Patient/{resident}/$recognizable-results",
        json=parameters({"name": "item", "valueCode": "IMG-CT-CHEST"},
                        {"name": "requester", "valueReference": {"reference": "Organization/h9"}},
                        {"name": "asOf", "valueDate": "2026-03-15"}),
        headers=FHIR_JSON,
    )  # fmt: skip
    assert response.status_code == 200, response.text
    (result,) = [p for p in response.json()["parameter"] if p["name"] == "result"]
    names = {p["name"] for p in result["part"]}
    assert "consent-refused" in str(result) and not names & {"resource", "endpoint", "retrieve"}
