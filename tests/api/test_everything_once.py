"""``Patient/$everything`` over real lifelong records: every resource of the record
exactly once across all pages, and each resource outside it that the record
refers to (practitioners, organisations...) exactly once as an include."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from ehr_service.config import PROJECT_ROOT
from tests.conftest import sample_bundles
from tests.helpers import FHIR_JSON, audit_get

LARGEST = sorted(sample_bundles(), key=lambda p: p.stat().st_size, reverse=True)[:2]
COMPARTMENT = orjson.loads((PROJECT_ROOT / "fhir_profiles/compartmentdefinition-patient.json")
                           .read_bytes())  # fmt: skip
# Types the R4 Patient CompartmentDefinition puts in a patient's compartment.
MEMBER_TYPES = {r["code"] for r in COMPARTMENT["resource"] if r.get("param")}
_REFERENCE = re.compile(r'"reference":"([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})"')


def _ingest(client: TestClient, path: Path) -> tuple[str, dict[str, tuple[str, str]]]:
    """The stored Patient's id, and every entry's fullUrl -> stored (type, id)."""
    bundle = orjson.loads(path.read_bytes())
    response = client.post("/fhir", content=path.read_bytes(), headers=FHIR_JSON)
    assert response.status_code == 200, response.text[:300]
    stored: dict[str, tuple[str, str]] = {}
    for entry, answer in zip(bundle["entry"], response.json()["entry"], strict=True):
        rtype, rid = answer["response"]["location"].split("/")[:2]
        stored[entry["fullUrl"]] = (rtype, rid)
    (patient,) = [v for v in stored.values() if v[0] == "Patient"]
    return patient[1], stored


def _expected_record(path: Path, stored: dict[str, tuple[str, str]], patient_url: str) -> set[Any]:
    """Oracle: the entries of the bundle that refer to the patient and are of a type
    the CompartmentDefinition lists, and the patient itself."""
    record = set()
    for entry in orjson.loads(path.read_bytes())["entry"]:
        resource = entry["resource"]
        if entry["fullUrl"] == patient_url or (
            resource["resourceType"] in MEMBER_TYPES
            and patient_url in orjson.dumps(resource).decode()
        ):
            record.add(stored[entry["fullUrl"]])
    return record


def _pages(client: TestClient, url: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    while url:
        page = client.get(url)
        assert page.status_code == 200, page.text[:300]
        body = page.json()
        entries += body.get("entry", [])
        following = [link["url"] for link in body["link"] if link["relation"] == "next"]
        url = following[0].removeprefix("http://testserver") if following else ""
    return entries


@pytest.mark.parametrize("path", LARGEST, ids=[p.name[:24] for p in LARGEST])
def test_every_resource_once_across_the_pages(client: TestClient, path: Path) -> None:
    pid, stored = _ingest(client, path)
    patient_url = next(url for url, (t, i) in stored.items() if (t, i) == ("Patient", pid))
    record = _expected_record(path, stored, patient_url)
    for count in (10, 50, 500, 1000):
        entries = _pages(client, f"/fhir/Patient/{pid}/$everything?_count={count}")
        keys = [(e["resource"]["resourceType"], e["resource"]["id"]) for e in entries]
        assert len(keys) == len(set(keys)), f"_count={count}: a resource came twice"
        matches = {k for k, e in zip(keys, entries, strict=True) if e["search"]["mode"] == "match"}
        includes = set(keys) - matches
        assert matches == record, count
        referred = {
            m.groups()
            for e in entries
            if e["search"]["mode"] == "match"
            for m in _REFERENCE.finditer(orjson.dumps(e["resource"]).decode())
        }
        outside = {r for r in referred if r not in record and r[0] != "Patient"}
        assert includes == outside, count
        assert all(k[0] not in MEMBER_TYPES or k not in record for k in includes)


def test_type_level_everything_lists_each_resource_once(client: TestClient) -> None:
    records = [_ingest(client, path) for path in LARGEST]
    entries = _pages(client, "/fhir/Patient/$everything?_count=50")
    keys = [(e["resource"]["resourceType"], e["resource"]["id"]) for e in entries]
    assert len(keys) == len(set(keys))
    matches = {k for k, e in zip(keys, entries, strict=True) if e["search"]["mode"] == "match"}
    assert {("Patient", pid) for pid, _ in records} <= matches
    includes = set(keys) - matches
    assert includes and all(k[0] not in MEMBER_TYPES for k in includes)


def test_an_included_resource_of_another_record_is_on_its_access_log(client: TestClient) -> None:
    a = client.post("/fhir/Patient", json={"resourceType": "Patient"}, headers=FHIR_JSON).json()[
        "id"
    ]
    b = client.post("/fhir/Patient", json={"resourceType": "Patient"}, headers=FHIR_JSON).json()[
        "id"
    ]

    def obs(pid: str, **extra: Any) -> dict[str, Any]:
        return {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                "subject": {"reference": f"Patient/{pid}"}, **extra}  # fmt: skip

    theirs = client.post("/fhir/Observation", json=obs(b), headers=FHIR_JSON).json()["id"]
    member = obs(a, hasMember=[{"reference": f"Observation/{theirs}"}])
    client.post("/fhir/Observation", json=member, headers=FHIR_JSON)
    entries = _pages(client, f"/fhir/Patient/{a}/$everything")
    included = {
        (e["resource"]["resourceType"], e["resource"]["id"])
        for e in entries
        if e["search"]["mode"] == "include"
    }
    assert ("Observation", theirs) in included
    log = audit_get(client, f"/fhir/AuditEvent?patient={b}&subtype=operation").json()
    assert log.get("entry"), "B's resource was disclosed: B's access log must say so"
