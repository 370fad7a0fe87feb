"""AuditEvent through FHIR: read-only, and a search over the real hash-chained events."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi.testclient import TestClient

from ehr_service.interactions.context import Services
from tests.helpers import FHIR_JSON, audit_get, bearer, patient, seal_and_verify, snapshot

MADE_UP = {
    "resourceType": "AuditEvent",
    "type": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110100"},
    "recorded": "2026-01-01T00:00:00Z",
    "agent": [{"requestor": True, "who": {"display": "nobody"}}],
    "source": {"observer": {"display": "forged"}},
}


def test_audit_events_cannot_be_written(client: TestClient, services: Services) -> None:
    client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON)
    before = snapshot(services)
    answers = [
        client.post("/fhir/AuditEvent", json=MADE_UP, headers=FHIR_JSON),
        client.put("/fhir/AuditEvent/1", json={**MADE_UP, "id": "1"}, headers=FHIR_JSON),
        client.delete("/fhir/AuditEvent/1"),
        client.put("/fhir/AuditEvent?outcome=0", json=MADE_UP, headers=FHIR_JSON),
    ]
    for response in answers:
        assert response.status_code == 405, response.text
        assert response.json()["resourceType"] == "OperationOutcome"
        assert response.headers["allow"] == "GET, HEAD"
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": MADE_UP, "request": {"method": "POST", "url": "AuditEvent"}}],
    }
    assert client.post("/fhir", json=bundle, headers=FHIR_JSON).status_code == 405
    batch = client.post("/fhir", json={**bundle, "type": "batch"}, headers=FHIR_JSON)
    assert batch.json()["entry"][0]["response"]["status"].startswith("405")
    assert snapshot(services) == before
    assert seal_and_verify(services).intact


def _ids(bundle: dict[str, Any]) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", [])]


def test_searching_the_real_events(client: TestClient, services: Services) -> None:
    pid = client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON).json()["id"]
    other = client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON).json()["id"]
    client.get(f"/fhir/Patient/{pid}")
    unknown = f"never-{uuid.uuid4().hex[:12]}"
    client.get(f"/fhir/Patient/{unknown}")  # a failure is an event too
    everything = audit_get(client, "/fhir/AuditEvent?_count=100").json()
    assert everything["type"] == "searchset"
    seqs = [int(i) for i in _ids(everything)]
    assert seqs == sorted(seqs, reverse=True)  # newest first
    assert all(e["resource"]["resourceType"] == "AuditEvent" for e in everything["entry"])
    mine = audit_get(client, f"/fhir/AuditEvent?patient=Patient/{pid}").json()
    subtypes = [e["resource"]["subtype"][0]["code"] for e in mine["entry"]]
    assert subtypes == ["read", "create"]
    assert all(
        {"reference": f"Patient/{pid}"} in [x.get("what") for x in e["resource"]["entity"]]
        for e in mine["entry"]
    )
    both = f"Patient/{pid},Patient/{other}"
    created = audit_get(client, f"/fhir/AuditEvent?patient={both}&subtype=create&outcome=0").json()
    assert len(created["entry"]) == 2
    failed = audit_get(client, f"/fhir/AuditEvent?outcome=4&entity=Patient/{unknown}").json()
    assert [e["resource"]["outcomeDesc"] for e in failed["entry"]] == ["404"]
    by_entity = audit_get(client, f"/fhir/AuditEvent?entity=Patient/{other}").json()
    assert len(by_entity["entry"]) == 1
    assert audit_get(client, "/fhir/AuditEvent?agent=someone-else").json().get("entry", []) == []
    by_agent = audit_get(client, "/fhir/AuditEvent?agent=test-system&type=rest&_count=100").json()
    assert len(by_agent["entry"]) >= 4
    long_ago = audit_get(client, "/fhir/AuditEvent?date=ge2000-01-01&date=lt2000-01-02")
    assert long_ago.json().get("entry", []) == []
    today = everything["entry"][0]["resource"]["recorded"][:10]
    assert len(audit_get(client, f"/fhir/AuditEvent?date={today}&_count=100").json()["entry"]) >= 5
    one = everything["entry"][-1]["resource"]
    read = audit_get(client, f"/fhir/AuditEvent/{one['id']}")
    assert read.status_code == 200 and read.json() == one


def test_paging_stays_put_while_events_are_added(client: TestClient) -> None:
    made = [
        client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON).json()["id"]
        for _ in range(5)
    ]
    first = audit_get(client, f"/fhir/AuditEvent?patient={','.join(made)}&_count=2").json()
    seen = _ids(first)
    client.get(f"/fhir/Patient/{made[0]}")  # a newer event of the same search
    page = first
    while True:
        following = [link["url"] for link in page["link"] if link["relation"] == "next"]
        if not following:
            break
        page = audit_get(client, following[0].removeprefix("http://testserver")).json()
        seen += _ids(page)
    assert len(seen) == len(set(seen)) == 5


def test_who_may_read_the_audit_trail(client: TestClient, services: Services) -> None:
    pid = client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON).json()["id"]
    citizen = bearer(services.settings, "patient/*.rs", patient=pid)
    staff = bearer(services.settings, "user/*.cruds")
    auditor = bearer(services.settings, "ehr/audit")
    assert client.get("/fhir/AuditEvent", headers=citizen).status_code == 403
    assert client.get("/fhir/AuditEvent", headers=staff).status_code == 403
    assert client.get("/fhir/AuditEvent", headers=auditor).status_code == 200
    assert client.get("/citizen/v1/me/access-log", headers=citizen).status_code == 200


def test_a_bad_audit_search_is_a_400_whatever_is_stored(client: TestClient) -> None:
    for query in ("nonsense=1", "date=yesterday", "entity=x", "_count=x", "_cursor=zz",
                  f"_cursor=b{'9' * 30}", "_cursor=b١٢"):  # fmt: skip
        response = audit_get(client, f"/fhir/AuditEvent?{query}")
        assert response.status_code == 400, (query, response.text)


def test_the_capability_statement_tells_the_truth_about_audit_events(client: TestClient) -> None:
    statement = client.get("/fhir/metadata").json()
    (audit,) = [r for r in statement["rest"][0]["resource"] if r["type"] == "AuditEvent"]
    assert [i["code"] for i in audit["interaction"]] == ["read", "search-type"]
    names = {p["name"] for p in audit["searchParam"]}
    assert {"patient", "date", "agent", "entity", "type", "subtype", "outcome"} <= names
    for name in names:  # each advertised parameter answers
        response = audit_get(client, f"/fhir/AuditEvent?{name}=x" if name != "date" else
                              "/fhir/AuditEvent?date=ge2026-01-01")  # fmt: skip
        assert response.status_code in {200, 400}, (name, response.text)
        assert response.status_code == 200 or name == "entity", name


def test_audit_dates_at_the_end_of_the_calendar(client: TestClient) -> None:
    client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON)
    for query, some in (("date=9999", False), ("date=le9999-12-31T23:59:59Z", True),
                        ("date=gt9999-12-31", False), ("date=ne9999", True)):  # fmt: skip
        response = audit_get(client, f"/fhir/AuditEvent?{query}")
        assert response.status_code == 200, (query, response.text)
        assert bool(response.json().get("entry")) is some, query
