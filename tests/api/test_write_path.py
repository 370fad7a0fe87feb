"""The write path holds whatever the input and the concurrency: a fresh database's
first concurrent writes, index values of any length, an unhandled error."""

from __future__ import annotations

import asyncio
import http.client
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa
import uvicorn
from fastapi.testclient import TestClient

from ehr_service.app import build_services, create_app
from ehr_service.config import Settings
from ehr_service.interactions import read
from ehr_service.interactions.context import Services
from ehr_service.storage.database import Database
from ehr_service.storage.migrate import upgrade
from ehr_service.storage.tables import resource
from tests.conftest import BACKENDS, MIGRATIONS, _worker, fresh_database
from tests.helpers import (
    FHIR_JSON,
    bearer,
    issue_expressions,
    patient,
    refusal,
    seal_and_verify,
    snapshot,
)


async def race(services: Services, requests: list[dict[str, Any]]) -> list[httpx.Response]:
    """The requests at once, each on its own worker thread (as under uvicorn)."""
    transport = httpx.ASGITransport(app=create_app(services=services))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers=bearer(services.settings)
    ) as client:
        return await asyncio.gather(*(client.request(**r) for r in requests))


@pytest.fixture(params=BACKENDS)
def fresh_services(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Services]:
    """Services over a database migrated just now, with no event on its audit chain."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
    else:
        url = fresh_database(request.getfixturevalue("pg_url"), f"audit_{_worker()}")
    database = Database(url)
    upgrade(database, MIGRATIONS)
    database.dispose()
    services = build_services(
        Settings(database_url=url, data_dir=tmp_path / "data", environment="test")
    )
    yield services
    services.database.dispose()


def test_first_twenty_concurrent_creates_on_a_fresh_database(fresh_services: Services) -> None:
    requests = [
        {"method": "POST", "url": "/fhir/Patient", "json": patient(), "headers": FHIR_JSON}
        for _ in range(20)
    ]
    responses = asyncio.run(race(fresh_services, requests))
    assert sorted(r.status_code for r in responses) == [201] * 20, [r.text for r in responses]
    verdict = seal_and_verify(fresh_services, signatures=True)
    assert verdict.intact, verdict.reason
    assert verdict.events == 20 and verdict.unsealed == 0


LONG = "x" * 10_000
LONG_SYSTEM = "urn:long:" + "s" * 3_000


def _long_observation(pid: str, code: str = LONG) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": LONG_SYSTEM, "code": code}], "text": "t"},
        "subject": {"reference": f"Patient/{pid}"},
        "identifier": [{"system": LONG_SYSTEM, "value": "长" * 5_000}],
        "performer": [{"identifier": {"system": "urn:p", "value": LONG}}],
        "valueQuantity": {"value": 1, "system": "urn:u", "code": "u" * 400},
        "meta": {"tag": [{"system": "urn:tag", "code": "t" * 600}]},
    }


def test_index_values_of_any_length_are_stored_and_found_exactly(client: TestClient) -> None:
    pid = client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON).json()["id"]
    named = client.post(
        "/fhir/Patient", json=patient(name=[{"family": "名" * 3_000}]), headers=FHIR_JSON
    )
    assert named.status_code == 201, named.text
    created = client.post("/fhir/Observation", json=_long_observation(pid), headers=FHIR_JSON)
    assert created.status_code == 201, created.text
    oid = created.json()["id"]
    # a value differing only after the indexed key must not match
    near = LONG[:-1] + "y"
    other = client.post("/fhir/Observation", json=_long_observation(pid, near), headers=FHIR_JSON)
    assert other.status_code == 201, other.text

    def ids(query: str) -> list[str]:
        response = client.get(f"/fhir/{query}")
        assert response.status_code == 200, response.text
        return sorted(e["resource"]["id"] for e in response.json().get("entry", []))

    assert ids(f"Observation?code={LONG_SYSTEM}|{LONG}") == [oid]
    assert ids(f"Observation?code={LONG}") == [oid]
    assert ids(f"Observation?identifier={LONG_SYSTEM}|{'长' * 5_000}") == sorted(
        [oid, other.json()["id"]]
    )
    assert ids(f"Observation?performer:identifier=urn:p|{LONG}") == sorted(
        [oid, other.json()["id"]]
    )
    assert ids(f"Observation?_tag=urn:tag|{'t' * 600}") == sorted([oid, other.json()["id"]])
    assert ids(f"Observation?code={LONG[:-1]}") == []
    assert ids(f"Patient?family:exact={'名' * 3_000}") == [named.json()["id"]]
    assert ids(f"Patient?family={'名' * 2_999}") == [named.json()["id"]]
    assert ids(f"Patient?family={'名' * 250}") == [named.json()["id"]]
    assert ids(f"Patient?family:exact={'名' * 2_999}") == []


def test_a_long_value_in_a_transaction_and_a_batch(client: TestClient, services: Services) -> None:
    pid = client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON).json()["id"]
    entries = [
        {"resource": _long_observation(pid), "request": {"method": "POST", "url": "Observation"}},
        {"resource": _long_observation(pid), "request": {"method": "POST", "url": "Observation"}},
    ]
    for kind in ("transaction", "batch"):
        bundle = {"resourceType": "Bundle", "type": kind, "entry": entries}
        response = client.post("/fhir", json=bundle, headers=FHIR_JSON)
        assert response.status_code == 200, response.text
        statuses = [e["response"]["status"] for e in response.json()["entry"]]
        assert statuses == ["201 Created", "201 Created"]
    found = client.get(f"/fhir/Observation?code={LONG}&_summary=count").json()
    assert found["total"] == 4


def test_a_batch_entry_that_fails_unexpectedly_is_its_own_500(
    client: TestClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = read.read

    def broken(conn: Any, ctx: Any, rtype: str, rid: str, *args: Any) -> Any:
        if rid == "boom":
            raise RuntimeError("a bug")
        return original(conn, ctx, rtype, rid, *args)

    monkeypatch.setattr(read, "read", broken)
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"resource": patient(), "request": {"method": "POST", "url": "Patient"}},
            {"request": {"method": "GET", "url": "Patient/boom"}},
            {"resource": patient(), "request": {"method": "POST", "url": "Patient"}},
        ],
    }
    response = client.post("/fhir", json=bundle, headers=FHIR_JSON)
    assert response.status_code == 200, response.text
    entries = response.json()["entry"]
    assert [e["response"]["status"][:3] for e in entries] == ["201", "500", "201"]
    outcome = entries[1]["response"]["outcome"]
    assert outcome["issue"][0]["code"] == "exception"
    assert response.headers["x-request-id"] in outcome["issue"][0]["diagnostics"]
    assert [row[0] for row in snapshot(services)[0]].count("Patient") == 2


@pytest.fixture
def live_server(services: Services) -> Iterator[tuple[str, int]]:
    config = uvicorn.Config(
        create_app(services=services), host="127.0.0.1", port=0, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield "127.0.0.1", port
    server.should_exit = True
    thread.join(timeout=10)


def test_an_unhandled_error_answers_and_keeps_the_connection(
    live_server: tuple[str, int], services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(read, "read", broken)
    connection = http.client.HTTPConnection(*live_server, timeout=10)
    headers = bearer(services.settings)
    connection.request("GET", "/fhir/Patient/abc", headers={**headers, "X-Request-Id": "req-1"})
    first = connection.getresponse()
    body = first.read().decode()
    assert first.status == 500
    assert first.getheader("content-type", "").startswith("application/fhir+json")
    assert "OperationOutcome" in body and "req-1" in body
    assert first.getheader("connection") != "close"
    # the same connection answers the next request
    connection.request(
        "POST", "/fhir/Patient", body=httpx.Request("POST", "/", json=patient()).read(),
        headers={**headers, **FHIR_JSON},
    )  # fmt: skip
    second = connection.getresponse()
    assert second.status == 201, second.read()
    second.read()
    connection.close()


def _stored_ids(services: Services, resource_type: str) -> set[str]:
    with services.unit.read() as conn:
        rows = conn.execute(
            sa.select(resource.c.res_id).where(
                resource.c.res_type == resource_type, resource.c.deleted == sa.false()
            )
        ).all()
    return {r.res_id for r in rows}


def test_concurrent_transactions_with_if_none_exist_point_at_what_exists(
    services: Services,
) -> None:
    def transaction(i: int) -> dict[str, Any]:
        return {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "fullUrl": "urn:uuid:8f0c0f0e-0000-4000-8000-000000000001",
                    "resource": {
                        "resourceType": "Organization",
                        "identifier": [{"system": "urn:org", "value": "H-1"}],
                        "name": f"Hospital {i}",
                    },
                    "request": {
                        "method": "POST",
                        "url": "Organization",
                        "ifNoneExist": "identifier=urn:org|H-1",
                    },
                },
                {
                    "resource": {
                        "resourceType": "Observation",
                        "status": "final",
                        "code": {"text": f"run {i}"},
                        "performer": [
                            {"reference": "urn:uuid:8f0c0f0e-0000-4000-8000-000000000001"}
                        ],
                    },
                    "request": {"method": "POST", "url": "Observation"},
                },
            ],
        }

    requests = [
        {"method": "POST", "url": "/fhir", "json": transaction(i), "headers": FHIR_JSON}
        for i in range(20)
    ]
    responses = asyncio.run(race(services, requests))
    assert sorted(r.status_code for r in responses) == [200] * 20, [r.text for r in responses]
    organizations = _stored_ids(services, "Organization")
    assert len(organizations) == 1
    with services.unit.read() as conn:
        rows = conn.execute(
            sa.select(resource.c.content).where(resource.c.res_type == "Observation")
        ).all()
    performers = {orjson.loads(r.content)["performer"][0]["reference"] for r in rows}
    assert len(rows) == 20
    assert performers == {f"Organization/{next(iter(organizations))}"}


def test_concurrent_conditional_updates_with_no_match_create_one(services: Services) -> None:
    body = patient(identifier=[{"system": "urn:mrn", "value": "M-20"}])
    requests = [
        {
            "method": "PUT",
            "url": "/fhir/Patient?identifier=urn:mrn|M-20",
            "json": body,
            "headers": FHIR_JSON,
        }
        for _ in range(20)
    ]
    responses = asyncio.run(race(services, requests))
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(201) == 1, [r.text for r in responses]
    assert statuses == [200] * 19 + [201], statuses
    assert len(_stored_ids(services, "Patient")) == 1


def test_documented_limits_are_400_or_401_and_store_nothing(
    client: TestClient, services: Services
) -> None:
    pid = client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON).json()["id"]
    before = snapshot(services)
    response = client.post("/fhir/Consent", json=refusal(pid, region="r" * 300), headers=FHIR_JSON)
    assert response.status_code == 400, response.text
    assert issue_expressions(response.json()) == [
        "Consent.provision.actor[0].reference.identifier.value"
    ]
    long_subject = bearer(services.settings, subject="s" * 300)
    response = client.get(f"/fhir/Patient/{pid}", headers=long_subject)
    assert response.status_code == 401, response.text
    assert snapshot(services) == before


def _two_residents(client: TestClient) -> tuple[str, str, str]:
    mrn = [{"system": "urn:hospital:mrn", "value": "A-1"}]
    a = client.post("/fhir/Patient", json=patient(identifier=mrn), headers=FHIR_JSON).json()["id"]
    b = client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON).json()["id"]
    theirs = client.post(
        "/fhir/Observation",
        json={
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "b's"},
            "subject": {"reference": f"Patient/{b}"},
        },
        headers=FHIR_JSON,
    ).json()["id"]
    return a, b, theirs


def test_a_patient_token_cannot_point_into_another_record(
    client: TestClient, services: Services
) -> None:
    a, b, theirs = _two_residents(client)
    mine = bearer(services.settings, "patient/*.cruds", patient=a, subject="citizen")
    body = client.get(f"/fhir/Patient/{a}").json()
    before = snapshot(services)
    linked = {**body, "link": [{"other": {"reference": f"Patient/{b}"}, "type": "replaced-by"}]}
    response = client.put(f"/fhir/Patient/{a}", json=linked, headers={**mine, **FHIR_JSON})
    assert response.status_code == 403, response.text
    for element in ("focus", "hasMember", "derivedFrom"):
        for target in (f"Observation/{theirs}", "Observation/never-was"):
            observation = {
                "resourceType": "Observation",
                "status": "final",
                "code": {"text": "mine"},
                "subject": {"reference": f"Patient/{a}"},
                element: [{"reference": target}],
            }
            response = client.post(
                "/fhir/Observation", json=observation, headers={**mine, **FHIR_JSON}
            )
            assert response.status_code == 403, (element, target, response.text)
            assert "record" in response.json()["issue"][0]["diagnostics"]
    assert snapshot(services) == before
    # what is the token's own is fine, in a transaction before it is stored too
    own = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:5a1d0000-0000-4000-8000-000000000001",
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"text": "panel"},
                    "subject": {"reference": f"Patient/{a}"},
                    "hasMember": [{"reference": "urn:uuid:5a1d0000-0000-4000-8000-000000000002"}],
                },
                "request": {"method": "POST", "url": "Observation"},
            },
            {
                "fullUrl": "urn:uuid:5a1d0000-0000-4000-8000-000000000002",
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"text": "member"},
                    "subject": {"reference": f"Patient/{a}"},
                },
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    }
    response = client.post("/fhir", json=own, headers={**mine, **FHIR_JSON})
    assert response.status_code == 200, response.text


def test_another_records_resource_answers_as_an_unknown_id(
    client: TestClient, services: Services
) -> None:
    a, _b, theirs = _two_residents(client)
    mine = {**bearer(services.settings, "patient/*.cruds", patient=a), **FHIR_JSON}
    before = snapshot(services)
    body = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "x"},
        "subject": {"reference": f"Patient/{a}"},
    }
    answers = []
    for rid in (theirs, "never-was-here"):
        calls = [
            client.put(f"/fhir/Observation/{rid}", json={**body, "id": rid}, headers=mine),
            client.get(f"/fhir/Observation/{rid}", headers=mine),
            client.delete(f"/fhir/Observation/{rid}", headers=mine),
            client.get(f"/fhir/Observation/{rid}/_history", headers=mine),
            client.get(f"/fhir/Observation/{rid}/_history/1", headers=mine),
            client.patch(
                f"/fhir/Observation/{rid}",
                json=[{"op": "replace", "path": "/status", "value": "amended"}],
                headers={**mine, "Content-Type": "application/json-patch+json"},
            ),
        ]
        batch = {
            "resourceType": "Bundle",
            "type": "batch",
            "entry": [
                {
                    "resource": {**body, "id": rid},
                    "request": {"method": "PUT", "url": f"Observation/{rid}"},
                },
                {"request": {"method": "GET", "url": f"Observation/{rid}"}},
                {"request": {"method": "DELETE", "url": f"Observation/{rid}"}},
            ],
        }
        entries = client.post("/fhir", json=batch, headers=mine).json()["entry"]
        answers.append(
            [(r.status_code, r.json()["issue"][0]["diagnostics"].replace(rid, "ID")) for r in calls]
            + [
                (e["response"]["status"], e["response"]["outcome"]["issue"][0]["diagnostics"]
                 .replace(rid, "ID"))
                for e in entries
            ]
        )  # fmt: skip
    assert answers[0] == answers[1]
    assert {str(status)[:3] for status, _ in answers[0]} == {"404"}
    assert snapshot(services) == before


def test_uri_below_is_case_sensitive_whatever_the_length(client: TestClient) -> None:
    for tail in ("vs", "v" * 300):
        url = f"http://example.org/Fhir/{tail}"
        body = {"resourceType": "ValueSet", "status": "active", "url": url}
        vid = client.post("/fhir/ValueSet", json=body, headers=FHIR_JSON).json()["id"]
        for prefix, found in ((url[:-1], True), (url[:-1].lower(), False), (url, True)):
            bundle = client.get(f"/fhir/ValueSet?url:below={prefix}&_id={vid}").json()
            assert bool(bundle.get("entry")) is found, (len(url), prefix[-20:])
