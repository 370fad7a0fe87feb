"""National identifiers of a resident: the WS 365 health-record number the service
assigns (17 digits, division from configuration and address, unique, concurrency
safe), the resident health card number, and the migration of existing records."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from ehr_service.app import build_services, create_app
from ehr_service.config import Settings
from ehr_service.interactions.context import Services
from ehr_service.storage.database import Database
from ehr_service.storage.migrate import upgrade
from ehr_service.storage.tables import resource, resource_version, search_token
from tests.conftest import BACKENDS, MIGRATIONS, _worker, fresh_database
from tests.helpers import FHIR_JSON, bearer, patient, snapshot

RECORD = "urn:oid:2.16.156.10011.1.2"
CARD = "urn:oid:2.16.156.10011.1.19"
LEGACY = "urn:ehr-service:lifelong-record-number"
DIVISION_URL = "urn:ehr-service:extension:administrative-division"


def _numbers(resource_: dict[str, Any], system: str = RECORD) -> list[str]:
    return [i["value"] for i in resource_.get("identifier", []) if i.get("system") == system]


def _create(client: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/fhir/Patient", json=body, headers=FHIR_JSON)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def _living_in(division: str) -> dict[str, Any]:
    address = {"use": "home", "text": "重庆市",
               "extension": [{"url": DIVISION_URL, "valueCode": division}]}  # fmt: skip
    return patient(address=[address])


def test_every_record_gets_a_ws365_number_searchable_by_identifier(client: TestClient) -> None:
    created = _create(client, patient())
    [number] = _numbers(created)
    assert len(number) == 17 and number.isdigit()
    assert number[:12] == "500000000000" and number[12:] != "00000"  # the default division
    record = next(i for i in created["identifier"] if i["system"] == RECORD)
    assert record["use"] == "official" and record["type"]["coding"][0]["code"] == "MR"
    assert _numbers(created, LEGACY) == []  # new records get no private number
    found = client.get(f"/fhir/Patient?identifier={RECORD}|{number}").json()
    assert [e["resource"]["id"] for e in found["entry"]] == [created["id"]]
    second = _create(client, patient())
    assert int(_numbers(second)[0][12:]) == int(number[12:]) + 1  # one sequence per division


def test_division_from_configuration_and_the_address(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(record_division_code="500103")
    plain = _numbers(_create(client, patient()))[0]
    assert plain.startswith("500103000000")
    local = _numbers(_create(client, _living_in("500103001002")))[0]
    assert local.startswith("500103001002") and local.endswith("00001")  # its own sequence
    township = _numbers(_create(client, _living_in("500103003")))[0]
    assert township.startswith("500103003000")
    elsewhere = _numbers(_create(client, _living_in("510104001001")))[0]
    assert elsewhere.startswith("500103000000")  # another county's code is not ours to use
    assert elsewhere[-5:] == "00002"
    configured = make_client(record_division_code="500103007008")
    assert _numbers(_create(configured, patient()))[0].startswith("500103007008")


def test_a_bad_division_code_in_configuration_is_refused() -> None:
    with pytest.raises(ValueError, match="record_division_code"):
        Settings(record_division_code="5001")


async def _race(services: Services, count: int) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app=create_app(services=services))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers=bearer(services.settings)
    ) as client:
        return await asyncio.gather(
            *(
                client.post(
                    "/fhir/Patient", json=patient(name=[{"text": f"李{i}"}]), headers=FHIR_JSON
                )
                for i in range(count)
            )
        )


def test_twenty_parallel_creates_get_distinct_numbers(services: Services) -> None:
    responses = asyncio.run(_race(services, 24))
    assert [r.status_code for r in responses] == [201] * 24
    numbers = [_numbers(r.json())[0] for r in responses]
    assert len(set(numbers)) == 24
    assert sorted(int(n[12:]) for n in numbers) == list(range(1, 25))  # no gaps, no repeats


def test_the_number_is_unique_by_a_database_constraint(services: Services) -> None:
    with pytest.raises(sa.exc.IntegrityError), services.database.engine.begin() as conn:
        for patient_id in ("a", "b"):
            conn.execute(
                sa.text("INSERT INTO health_record_number (number, patient_id) VALUES (:n, :p)"),
                {"n": "50000000000000001", "p": patient_id},
            )


def test_health_card_number_accepted_checked_and_searchable(
    client: TestClient, services: Services
) -> None:
    created = _create(client, patient(identifier=[{"system": CARD, "value": "H50010012345"}]))
    assert _numbers(created, CARD) == ["H50010012345"]
    found = client.get(f"/fhir/Patient?identifier={CARD}|H50010012345").json()
    assert [e["resource"]["id"] for e in found["entry"]] == [created["id"]]
    before = snapshot(services)
    for bad in ("h5001-0012", "A" * 19, ""):
        body = patient(identifier=[{"system": "urn:x", "value": "1"}, {"system": CARD,
                                                                       "value": bad}])  # fmt: skip
        response = client.post("/fhir/Patient", json=body, headers=FHIR_JSON)
        assert response.status_code in (400, 422), bad
        assert response.json()["resourceType"] == "OperationOutcome"
        if response.status_code == 422:
            assert response.json()["issue"][0]["expression"] == ["Patient.identifier[1].value"]
    assert snapshot(services) == before


# -- the migration of existing records ------------------------------------------------
@pytest.fixture(params=BACKENDS)
def old_database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'old.sqlite3'}"
    return fresh_database(request.getfixturevalue("pg_url"), f"old_{_worker()}")


def _legacy_patient(conn: sa.Connection, patient_id: str, number: str) -> None:
    from datetime import UTC, datetime

    now = datetime(2026, 1, 1, tzinfo=UTC)
    body = {"resourceType": "Patient", "id": patient_id,
            "meta": {"versionId": "1", "lastUpdated": "2026-01-01T00:00:00Z"},
            "identifier": [{"use": "official", "system": LEGACY, "value": number}],
            "gender": "female"}  # fmt: skip
    content = orjson.dumps(body)
    row = {"res_type": "Patient", "res_id": patient_id, "version_id": 1, "last_updated": now,
           "compartment_patient_id": patient_id, "content": content}  # fmt: skip
    conn.execute(resource.insert().values(**row))
    conn.execute(resource_version.insert().values(**row, method="POST"))
    conn.execute(search_token.insert().values(res_type="Patient", res_id=patient_id,
                                              param="identifier", system=LEGACY, code=number,
                                              compartment_patient_id=patient_id))  # fmt: skip


def test_migration_keeps_the_old_number_as_old_and_assigns_a_national_one(
    old_database: str, tmp_path: Path
) -> None:
    database = Database(old_database)
    try:
        upgrade(database, MIGRATIONS, "0012")
        with database.engine.begin() as conn:
            _legacy_patient(conn, "old-1", "EHR0000000000011")
            _legacy_patient(conn, "old-2", "EHR0000000000029")
        upgrade(database, MIGRATIONS)
    finally:
        database.dispose()
    settings = Settings(database_url=old_database, data_dir=tmp_path / "data", environment="test")
    services = build_services(settings)
    try:
        with TestClient(create_app(services=services), headers=bearer(settings)) as client:
            one = client.get("/fhir/Patient/old-1").json()
            assert one["meta"]["versionId"] == "2"
            old = next(i for i in one["identifier"] if i["system"] == LEGACY)
            assert old == {"use": "old", "system": LEGACY, "value": "EHR0000000000011"}
            [number] = _numbers(one)
            two = _numbers(client.get("/fhir/Patient/old-2").json())
            assert len(number) == 17 and two and two[0] != number
            found = client.get(f"/fhir/Patient?identifier={RECORD}|{number}").json()
            assert [e["resource"]["id"] for e in found["entry"]] == ["old-1"]
            found = client.get(f"/fhir/Patient?identifier={LEGACY}|EHR0000000000011").json()
            assert [e["resource"]["id"] for e in found["entry"]] == ["old-1"]
            history = client.get("/fhir/Patient/old-1/_history").json()
            assert history["total"] == 2
            # an update leaves both numbers in place; changing the old one is refused
            kept = client.put("/fhir/Patient/old-1", json={"resourceType": "Patient",
                              "id": "old-1", "gender": "female"}, headers=FHIR_JSON)  # fmt: skip
            assert kept.status_code == 200
            assert _numbers(kept.json()) == [number]
            assert _numbers(kept.json(), LEGACY) == ["EHR0000000000011"]
            forged = {**kept.json(), "identifier": [{"system": LEGACY, "value": "EHR1"}]}
            assert client.put("/fhir/Patient/old-1", json=forged,
                              headers=FHIR_JSON).status_code == 422  # fmt: skip
            assert _numbers(_create(client, patient()))[0] not in (number, two[0])
    finally:
        services.database.dispose()
