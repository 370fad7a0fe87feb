"""history at every level, _since, _count and paging that survives concurrent writes."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

from fastapi.testclient import TestClient

from tests.helpers import FHIR_JSON, TERMINOLOGY_TYPES, patient


def _ids(bundle: dict) -> list[tuple[str, str]]:
    return [
        (e["resource"]["id"], e["resource"]["meta"]["versionId"])
        for e in bundle.get("entry", [])
        if "resource" in e
    ]


def _link(bundle: dict, relation: str) -> str | None:
    for link in bundle["link"]:
        if link["relation"] == relation:
            parts = urlsplit(link["url"])
            return f"{parts.path}?{parts.query}"
    return None


def _create(client: TestClient, n: int) -> list[str]:
    ids = []
    for _ in range(n):
        response = client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON)
        ids.append(response.json()["id"])
    return ids


def test_instance_type_and_system_history(client: TestClient) -> None:
    [pid] = _create(client, 1)
    current = client.get(f"/fhir/Patient/{pid}").json()
    client.put(f"/fhir/Patient/{pid}", json={**current, "gender": "male"}, headers=FHIR_JSON)
    client.post(
        "/fhir/Observation",
        json={"resourceType": "Observation", "status": "final", "code": {"text": "x"}},
        headers=FHIR_JSON,
    )
    instance = client.get(f"/fhir/Patient/{pid}/_history").json()
    assert instance["type"] == "history" and instance["total"] == 2
    assert _ids(instance) == [(pid, "2"), (pid, "1")]
    assert instance["entry"][0]["request"] == {"method": "PUT", "url": f"Patient/{pid}"}
    assert instance["entry"][1]["request"] == {"method": "POST", "url": "Patient"}
    assert instance["entry"][0]["response"]["etag"] == 'W/"2"'
    type_level = client.get("/fhir/Patient/_history").json()
    assert {e["resource"]["resourceType"] for e in type_level["entry"]} == {"Patient"}
    system = client.get("/fhir/_history").json()
    assert [
        e["resource"]["resourceType"]
        for e in system["entry"]
        if e["resource"]["resourceType"] not in TERMINOLOGY_TYPES
    ] == [
        "Observation",
        "Patient",
        "Patient",
    ]
    assert client.get("/fhir/Patient/unknown/_history").status_code == 404


def test_since_filters_by_write_time(client: TestClient) -> None:
    _create(client, 2)
    time.sleep(0.01)
    cut = client.get("/fhir/_history?_count=1").json()["entry"][0]["response"]["lastModified"]
    time.sleep(0.01)
    later = _create(client, 2)
    bundle = client.get("/fhir/_history", params={"_since": cut}).json()
    ids = [pid for pid, _ in _ids(bundle)]
    assert set(later) <= set(ids) and len(ids) == 3  # the cut version itself is included
    assert client.get("/fhir/_history?_since=yesterday").status_code == 400
    assert client.get("/fhir/_history?_count=abc").status_code == 400
    assert client.get("/fhir/_history?_cursor=zz").status_code == 400


def test_paging_is_stable_while_writing(client: TestClient) -> None:
    created = _create(client, 7)
    first = client.get("/fhir/Patient/_history?_count=3").json()
    assert _link(first, "previous") is None
    seen = [pid for pid, _ in _ids(first)]
    _create(client, 2)  # new writes must not shift the following pages
    page = first
    while (next_url := _link(page, "next")) is not None:
        page = client.get(next_url).json()
        seen.extend(pid for pid, _ in _ids(page))
    assert seen == list(reversed(created))
    back = client.get(_link(page, "previous") or "").json()
    assert [pid for pid, _ in _ids(back)] == list(reversed(created))[3:6]


def test_count_is_clamped(make_client) -> None:  # type: ignore[no-untyped-def]
    client = make_client(max_page_size=2, default_page_size=2)
    _create(client, 3)
    bundle = client.get("/fhir/_history?_count=500").json()
    assert len(bundle["entry"]) == 2
    assert "_count=2" in bundle["link"][0]["url"]
    assert "entry" not in client.get("/fhir/_history?_count=0").json()
