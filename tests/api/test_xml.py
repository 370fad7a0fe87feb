"""FHIR XML over HTTP (R4 §2.6.1, §3.1.0.1.6): every interaction through
``Accept``, ``Content-Type`` and ``_format``, bundles and OperationOutcomes
included; the stored JSON is the same whichever format it came in."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi.testclient import TestClient
from lxml import etree

from ehr_service.fhir.xml import FHIR_NS, json_to_xml, xml_to_json
from ehr_service.interactions.context import Services
from tests.conftest import sample_bundles
from tests.helpers import FHIR_JSON, observation, patient, snapshot

XML = "application/fhir+xml"
SEND_XML = {"Content-Type": XML, "Accept": XML}
F = f"{{{FHIR_NS}}}"


def _xml(body: dict) -> bytes:
    return json_to_xml(json.dumps(body).encode())


def _root(response) -> etree._Element:  # type: ignore[no-untyped-def]
    assert response.headers["content-type"].startswith(XML), response.text
    return etree.fromstring(response.content)


def _value(root: etree._Element, path: str) -> str | None:
    found = root.find("/".join(F + step for step in path.split("/")))
    return None if found is None else found.get("value")


def test_create_read_update_delete_in_xml(client: TestClient) -> None:
    created = client.post("/fhir/Patient", content=_xml(patient(gender="female")),
                          headers=SEND_XML)  # fmt: skip
    assert created.status_code == 201
    root = _root(created)
    assert etree.QName(root).localname == "Patient"
    pid = _value(root, "id")
    assert _value(root, "meta/versionId") == "1" and _value(root, "gender") == "female"
    # the same resource, read as JSON, is what the XML said
    as_json = client.get(f"/fhir/Patient/{pid}").json()
    assert as_json["gender"] == "female" and as_json["id"] == pid

    updated = client.put(
        f"/fhir/Patient/{pid}", content=_xml(patient(id=pid, gender="male")), headers=SEND_XML
    )
    assert updated.status_code == 200 and _value(_root(updated), "gender") == "male"
    read = client.get(f"/fhir/Patient/{pid}", params={"_format": "xml"})
    assert _value(_root(read), "meta/versionId") == "2"
    vread = client.get(f"/fhir/Patient/{pid}/_history/1", headers={"Accept": XML})
    assert _value(_root(vread), "gender") == "female"
    assert client.delete(f"/fhir/Patient/{pid}", headers={"Accept": XML}).status_code in {200, 204}
    gone = client.get(f"/fhir/Patient/{pid}", headers={"Accept": XML})
    assert gone.status_code == 410
    assert etree.QName(_root(gone)).localname == "OperationOutcome"


def test_a_body_in_xml_answers_in_xml_without_an_accept(client: TestClient) -> None:
    created = client.post("/fhir/Patient", content=_xml(patient()), headers={"Content-Type": XML})
    assert created.status_code == 201 and created.headers["content-type"].startswith(XML)
    json_back = client.post(
        "/fhir/Patient", content=_xml(patient()), headers={"Content-Type": XML, "Accept": "*/*"}
    )
    assert json_back.headers["content-type"].startswith(XML)


def test_accept_quality_decides(client: TestClient) -> None:
    pid = client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON).json()["id"]
    xml_first = {"Accept": "application/fhir+json;q=0.5, application/fhir+xml"}
    assert (
        client.get(f"/fhir/Patient/{pid}", headers=xml_first)
        .headers["content-type"]
        .startswith(XML)
    )
    tie = {"Accept": "application/fhir+xml, application/fhir+json"}
    assert (
        client.get(f"/fhir/Patient/{pid}", headers=tie)
        .headers["content-type"]
        .startswith("application/fhir+json")
    )
    for accept in ("application/xml", "text/xml", "application/fhir+xml; fhirVersion=4.0"):
        assert (
            client.get(f"/fhir/Patient/{pid}", headers={"Accept": accept})
            .headers["content-type"]
            .startswith(XML)
        )
    refused = client.get(f"/fhir/Patient/{pid}", headers={"Accept": "text/html"})
    assert refused.status_code == 406
    r3 = {"Accept": "application/fhir+xml; fhirVersion=3.0"}
    assert client.get(f"/fhir/Patient/{pid}", headers=r3).status_code == 406


def test_search_bundle_and_pretty_xml(client: TestClient) -> None:
    pid = client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON).json()["id"]
    for value in (5.8, 6.1):
        client.post("/fhir/Observation", json=observation(f"Patient/{pid}", value),
                    headers=FHIR_JSON)  # fmt: skip
    found = client.get(
        "/fhir/Observation", params={"subject": f"Patient/{pid}", "_format": XML, "_pretty": "true"}
    )
    root = _root(found)
    assert etree.QName(root).localname == "Bundle" and _value(root, "total") == "2"
    entries = root.findall(f"{F}entry/{F}resource/{F}Observation")
    assert len(entries) == 2
    assert b"\n  <" in found.content  # indented
    # the XML bundle says exactly what the JSON bundle says
    as_json = client.get("/fhir/Observation", params={"subject": f"Patient/{pid}"}).json()
    assert json.loads(xml_to_json(found.content))["entry"] == as_json["entry"]


def test_errors_are_operation_outcomes_in_xml(client: TestClient, services: Services) -> None:
    before = snapshot(services)
    unknown = client.get("/fhir/Patient/nope", headers={"Accept": XML})
    assert unknown.status_code == 404
    assert etree.QName(_root(unknown)).localname == "OperationOutcome"
    bad = client.post(
        "/fhir/Patient",
        content=b'<Patient xmlns="http://hl7.org/fhir"><colour value="red"/></Patient>',
        headers=SEND_XML,
    )
    assert bad.status_code == 400
    outcome = _root(bad)
    assert _value(outcome, "issue/expression") == "Patient.colour"
    invalid = client.post(  # well-formed XML, invalid FHIR: the JSON path's validation
        "/fhir/Patient",
        content=b'<Patient xmlns="http://hl7.org/fhir"><gender value="cat"/></Patient>',
        headers=SEND_XML,
    )
    assert invalid.status_code in {400, 422}
    assert etree.QName(_root(invalid)).localname == "OperationOutcome"
    unauthenticated = client.get(
        "/fhir/Patient", headers={"Accept": XML, "Authorization": "Bearer nonsense"}
    )
    assert unauthenticated.status_code == 401
    assert etree.QName(_root(unauthenticated)).localname == "OperationOutcome"
    assert snapshot(services) == before


def test_transaction_in_xml(client: TestClient) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:11111111-1111-4111-8111-111111111111",
                "resource": patient(),
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "resource": observation("urn:uuid:11111111-1111-4111-8111-111111111111"),
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    }
    response = client.post("/fhir", content=_xml(bundle), headers=SEND_XML)
    assert response.status_code == 200, response.text
    root = _root(response)
    assert _value(root, "type") == "transaction-response"
    locations = [e.get("value") for e in root.iter(f"{F}location")]
    assert len(locations) == 2 and locations[1].startswith("Observation/")
    stored = client.get(f"/fhir/{locations[1].split('/_history')[0]}").json()
    assert stored["subject"]["reference"] == locations[0].split("/_history")[0]


def test_capability_statement_in_xml(client: TestClient) -> None:
    root = _root(client.get("/fhir/metadata", headers={"Accept": XML}))
    assert etree.QName(root).localname == "CapabilityStatement"
    formats = {e.get("value") for e in root.findall(f"{F}format")}
    assert XML in formats


def test_a_synthea_record_loads_in_xml_and_reads_back_as_in_json(client: TestClient) -> None:
    records = [p for p in sample_bundles() if b'"resourceType": "Patient"' in p.read_bytes()]
    path: Path = min(records, key=lambda p: p.stat().st_size)
    raw = path.read_bytes()
    response = client.post("/fhir", content=json_to_xml(raw), headers=SEND_XML)
    assert response.status_code == 200, response.text[:500]
    source = {
        e["resource"]["resourceType"]: e["resource"]
        for e in json.loads(raw)["entry"]
        if e["resource"]["resourceType"] == "Patient"
    }["Patient"]
    location = _root(response).find(f"{F}entry/{F}response/{F}location").get("value")
    stored = client.get(f"/fhir/{location.split('/_history')[0]}").json()
    assert stored["name"] == source["name"] and stored["birthDate"] == source["birthDate"]
