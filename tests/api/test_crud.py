"""read, vread, create, update, delete and their headers, on both backends."""

from __future__ import annotations

from fastapi.testclient import TestClient

from ehr_service.interactions.context import Services
from tests.helpers import FHIR_JSON, issue_expressions, observation, patient, snapshot


def create_patient(client: TestClient, **fields: object) -> dict:
    response = client.post("/fhir/Patient", json=patient(**fields), headers=FHIR_JSON)
    assert response.status_code == 201, response.text
    return response.json()


def test_create_assigns_id_and_meta_ignoring_the_clients(client: TestClient) -> None:
    response = client.post(
        "/fhir/Patient",
        json=patient(
            id="mine",
            meta={
                "versionId": "7",
                "lastUpdated": "2001-01-01T00:00:00Z",
                "tag": [{"system": "urn:t", "code": "x"}],
            },
        ),
        headers=FHIR_JSON,
    )
    assert response.status_code == 201
    body = response.json()
    assert body["id"] != "mine"
    assert body["meta"]["versionId"] == "1"
    assert body["meta"]["lastUpdated"].startswith("20") and body["meta"]["lastUpdated"] != (
        "2001-01-01T00:00:00Z"
    )
    assert body["meta"]["tag"] == [{"system": "urn:t", "code": "x"}]
    assert response.headers["etag"] == 'W/"1"'
    assert response.headers["location"] == f"http://testserver/fhir/Patient/{body['id']}/_history/1"
    assert response.headers["content-type"].startswith("application/fhir+json")
    assert "last-modified" in response.headers
    assert client.get("/fhir/Patient/mine").status_code == 404


def test_read_serves_what_was_stored(client: TestClient) -> None:
    created = create_patient(client)
    response = client.get(f"/fhir/Patient/{created['id']}")
    assert response.status_code == 200
    assert response.json() == created
    assert response.headers["etag"] == 'W/"1"'


def test_read_if_none_match_gives_304(client: TestClient) -> None:
    created = create_patient(client)
    response = client.get(f"/fhir/Patient/{created['id']}", headers={"If-None-Match": 'W/"1"'})
    assert response.status_code == 304
    assert response.content == b""


def test_update_versions_and_vread(client: TestClient) -> None:
    created = create_patient(client)
    pid = created["id"]
    changed = {**created, "gender": "male"}
    response = client.put(f"/fhir/Patient/{pid}", json=changed, headers=FHIR_JSON)
    assert response.status_code == 200
    assert response.headers["etag"] == 'W/"2"'
    assert response.json()["meta"]["versionId"] == "2"
    assert client.get(f"/fhir/Patient/{pid}").json()["gender"] == "male"
    v1 = client.get(f"/fhir/Patient/{pid}/_history/1")
    assert v1.status_code == 200 and v1.json()["gender"] == "female"
    assert client.get(f"/fhir/Patient/{pid}/_history/3").status_code == 404
    assert client.get(f"/fhir/Patient/{pid}/_history/x").status_code == 404


def test_update_as_create_uses_the_client_id(client: TestClient) -> None:
    response = client.put(
        "/fhir/Patient/resident-1", json=patient(id="resident-1"), headers=FHIR_JSON
    )
    assert response.status_code == 201
    assert response.headers["location"].endswith("/fhir/Patient/resident-1/_history/1")
    assert client.get("/fhir/Patient/resident-1").json()["id"] == "resident-1"


def test_update_id_must_match_url(client: TestClient, services: Services) -> None:
    created = create_patient(client)
    before = snapshot(services)
    wrong = client.put(
        f"/fhir/Patient/{created['id']}", json={**created, "id": "other"}, headers=FHIR_JSON
    )
    assert wrong.status_code == 400
    assert wrong.json()["resourceType"] == "OperationOutcome"
    missing = client.put(f"/fhir/Patient/{created['id']}", json=patient(), headers=FHIR_JSON)
    assert missing.status_code == 400
    assert snapshot(services) == before


def test_resource_type_must_match_url(client: TestClient, services: Services) -> None:
    before = snapshot(services)
    response = client.post("/fhir/Observation", json=patient(), headers=FHIR_JSON)
    assert response.status_code == 400
    assert "does not match" in response.json()["issue"][0]["diagnostics"]
    assert snapshot(services) == before


def test_invalid_resource_lists_every_problem(client: TestClient, services: Services) -> None:
    before = snapshot(services)
    bad = {
        "resourceType": "Observation",
        "code": {"text": 5},
        "valueQuantity": {"value": "x"},
        "subject": {},
        "unknownElement": 1,
        "note": [],
    }
    response = client.post("/fhir/Observation", json=bad, headers=FHIR_JSON)
    assert response.status_code == 400
    outcome = response.json()
    expressions = issue_expressions(outcome)
    for expected in (
        "Observation.status",
        "Observation.code.text",
        "Observation.unknownElement",
        "Observation.subject",
        "Observation.note",
    ):
        assert expected in expressions, (expected, expressions)
    assert all(issue["severity"] == "error" for issue in outcome["issue"])
    assert snapshot(services) == before


def test_every_r4_type_is_accepted(client: TestClient) -> None:
    examples = [
        {"resourceType": "Basic", "code": {"text": "x"}},
        {"resourceType": "MedicinalProduct", "name": [{"productName": "Aspirin 100 mg"}]},
        {"resourceType": "SubstanceProtein", "numberOfSubunits": 2},
        {"resourceType": "Binary", "contentType": "text/plain", "data": "aGVsbG8="},
        {"resourceType": "Bundle", "type": "collection"},
    ]
    for body in examples:
        response = client.post(f"/fhir/{body['resourceType']}", json=body, headers=FHIR_JSON)
        assert response.status_code == 201, (body["resourceType"], response.text)


def test_unknown_type_is_404(client: TestClient) -> None:
    assert client.get("/fhir/Unicorn/1").status_code == 404
    response = client.post(
        "/fhir/Citation", json={"resourceType": "Citation"}, headers=FHIR_JSON
    )  # R4B only, not R4
    assert response.status_code == 404


def test_delete_then_read_is_410_and_history_keeps_it(client: TestClient) -> None:
    created = create_patient(client)
    pid = created["id"]
    deleted = client.delete(f"/fhir/Patient/{pid}")
    assert deleted.status_code == 204
    assert deleted.headers["etag"] == 'W/"2"'
    gone = client.get(f"/fhir/Patient/{pid}")
    assert gone.status_code == 410
    assert gone.json()["issue"][0]["code"] == "deleted"
    assert client.get(f"/fhir/Patient/{pid}/_history/1").status_code == 200
    assert client.get(f"/fhir/Patient/{pid}/_history/2").status_code == 410
    again = client.delete(f"/fhir/Patient/{pid}")
    assert again.status_code == 204
    history = client.get(f"/fhir/Patient/{pid}/_history").json()
    assert history["total"] == 2
    assert [e["request"]["method"] for e in history["entry"]] == ["DELETE", "POST"]
    revived = client.put(
        f"/fhir/Patient/{pid}", json={**created, "gender": "other"}, headers=FHIR_JSON
    )
    assert revived.status_code == 201
    assert revived.json()["meta"]["versionId"] == "3"
    assert client.delete("/fhir/Patient/never-was").status_code == 404


def test_if_match(client: TestClient, services: Services) -> None:
    created = create_patient(client)
    pid = created["id"]
    before = snapshot(services)
    stale = client.put(
        f"/fhir/Patient/{pid}", json=created, headers={**FHIR_JSON, "If-Match": 'W/"5"'}
    )
    assert stale.status_code == 412
    assert snapshot(services) == before
    assert client.delete(f"/fhir/Patient/{pid}", headers={"If-Match": 'W/"9"'}).status_code == 412
    bad = client.put(f"/fhir/Patient/{pid}", json=created, headers={**FHIR_JSON, "If-Match": "x"})
    assert bad.status_code == 400
    fresh = client.put(
        f"/fhir/Patient/{pid}", json=created, headers={**FHIR_JSON, "If-Match": 'W/"1"'}
    )
    assert fresh.status_code == 200
    missing = client.put(
        "/fhir/Patient/nope", json=patient(id="nope"), headers={**FHIR_JSON, "If-Match": 'W/"1"'}
    )
    assert missing.status_code == 412


def test_prefer_return(client: TestClient) -> None:
    minimal = client.post(
        "/fhir/Patient", json=patient(), headers={**FHIR_JSON, "Prefer": "return=minimal"}
    )
    assert minimal.status_code == 201 and minimal.content == b""
    assert minimal.headers["location"]
    outcome = client.post(
        "/fhir/Patient", json=patient(), headers={**FHIR_JSON, "Prefer": "return=OperationOutcome"}
    )
    assert outcome.status_code == 201
    assert outcome.json()["resourceType"] == "OperationOutcome"
    assert outcome.json()["issue"][0]["severity"] == "information"
    pid = outcome.headers["location"].split("/")[-3]
    deleted = client.delete(f"/fhir/Patient/{pid}", headers={"Prefer": "return=OperationOutcome"})
    assert deleted.status_code == 200
    assert deleted.json()["resourceType"] == "OperationOutcome"


def test_pretty_and_format(client: TestClient) -> None:
    created = create_patient(client)
    pretty = client.get(f"/fhir/Patient/{created['id']}?_pretty=true")
    assert b"\n  " in pretty.content and pretty.json() == created
    compact = client.get(f"/fhir/Patient/{created['id']}")
    assert b"\n" not in compact.content
    as_json = client.get(f"/fhir/Patient/{created['id']}?_format=json")
    assert as_json.status_code == 200
    plain = client.get(f"/fhir/Patient/{created['id']}", headers={"Accept": "application/json"})
    assert plain.headers["content-type"].startswith("application/json")


def test_compartment_owner_is_stored(client: TestClient, services: Services) -> None:
    created = create_patient(client)
    response = client.post(
        "/fhir/Observation", json=observation(f"Patient/{created['id']}"), headers=FHIR_JSON
    )
    assert response.status_code == 201
    current, _versions = snapshot(services)
    owners = {(row[0], row[5]) for row in current}
    assert ("Observation", created["id"]) in owners
    assert ("Patient", created["id"]) in owners


def test_r4_only_types_are_validated_too(client: TestClient, services: Services) -> None:
    before = snapshot(services)
    response = client.post(
        "/fhir/MedicinalProduct",
        json={"resourceType": "MedicinalProduct", "name": {"productName": "x"}, "bogus": 1},
        headers=FHIR_JSON,
    )
    assert response.status_code == 400
    assert {"MedicinalProduct.name", "MedicinalProduct.bogus"} <= set(
        issue_expressions(response.json())
    )
    assert snapshot(services) == before
