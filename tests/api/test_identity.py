"""One record per resident: ID numbers validated, unique, never stored in plaintext;
lifelong record numbers; the life cycle from birth certificate to death."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from ehr_service.app import create_app
from ehr_service.interactions.context import Services
from ehr_service.security.caller import Caller
from ehr_service.security.tokens import TokenVerifier
from ehr_service.storage.tables import metadata
from tests.helpers import (
    FHIR_JSON,
    ID_SYSTEM,
    PUBLISHED_AT_START,
    bearer,
    id_identifier,
    make_id_number,
    observation,
    patient,
    snapshot,
)

RETURN_OUTCOME = {**FHIR_JSON, "Prefer": "return=OperationOutcome"}


def _resident(number: str, **fields: Any) -> dict[str, Any]:
    defaults: dict[str, Any] = {"gender": "male", "birthDate": "1990-03-07"}
    return patient(identifier=[id_identifier(number)], **{**defaults, **fields})


def _create(client: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/fhir/Patient", json=body, headers=FHIR_JSON)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


class _MaskedStaff(TokenVerifier):
    """Staff whose tokens may read but not see ID numbers unmasked."""

    def verify(self, token: str) -> Caller:
        return replace(super().verify(token), sees_id_numbers=False)

    def cached(self, token: str) -> Caller | None:
        return None


def _masked_client(services: Services) -> TestClient:
    app = create_app(services=services)
    app.state.services = replace(services, tokens=_MaskedStaff(services.settings))
    headers = bearer(services.settings, "user/*.cruds")
    return TestClient(app, raise_server_exceptions=False, headers=headers)


def _record_numbers(resource: dict[str, Any]) -> list[str]:
    system = "urn:oid:2.16.156.10011.1.2"
    return [i["value"] for i in resource["identifier"] if i["system"] == system]


def _id_values(resource: dict[str, Any]) -> list[str]:
    return [i["value"] for i in resource.get("identifier", []) if i.get("system") == ID_SYSTEM]


def test_number_reads_back_as_written_and_masked_for_others(
    client: TestClient, services: Services
) -> None:
    with_x = next(n for s in range(100, 300) if (n := make_id_number(sequence=str(s)))[17] == "X")
    number = with_x[:17] + "x"  # written in lower case: read back exactly so
    created = _create(client, _resident(number))
    assert _id_values(created) == [number]
    assert "extension" not in next(i for i in created["identifier"] if i["system"] == ID_SYSTEM)
    read = client.get(f"/fhir/Patient/{created['id']}").json()
    assert _id_values(read) == [number]
    with _masked_client(services) as masked:
        shown = masked.get(f"/fhir/Patient/{created['id']}").json()
        assert _id_values(shown) == [number[:4] + "*" * 10 + number[-4:]]
        assert "sealed" not in str(shown)
        found = masked.get(f"/fhir/Patient?identifier={ID_SYSTEM}|{with_x}").json()
        assert [e["resource"]["id"] for e in found["entry"]] == [created["id"]]
        assert number not in str(found["entry"]) and with_x not in str(found["entry"])


def test_search_by_number_uses_the_blind_index(client: TestClient) -> None:
    number = make_id_number(born="19851212", sequence="457")
    created = _create(client, _resident(number, birthDate="1985-12-12"))
    _create(client, _resident(make_id_number(born="19851212", sequence="459")))
    obs = client.post(
        "/fhir/Observation", json=observation(f"Patient/{created['id']}"), headers=FHIR_JSON
    )
    assert obs.status_code == 201
    for query in (
        f"identifier={ID_SYSTEM}|{number}",
        f"identifier={number}",
        f"identifier={number.lower()}",
        f"identifier:not={ID_SYSTEM}|{make_id_number(sequence='999')}&birthdate=1985-12-12"
        f"&identifier={ID_SYSTEM}|{number}",
    ):
        bundle = client.get(f"/fhir/Patient?{query}").json()
        assert [e["resource"]["id"] for e in bundle["entry"]] == [created["id"]], query
    chained = client.get(f"/fhir/Observation?subject:Patient.identifier={ID_SYSTEM}|{number}")
    assert [e["resource"]["subject"] for e in chained.json()["entry"]] == [
        {"reference": f"Patient/{created['id']}"}
    ]
    assert client.get(f"/fhir/Patient?identifier={ID_SYSTEM}|{number[:17]}0").json()["total"] == 0


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("110105194912310021", "check character"),
        ("110105194902300028", "not a real date"),
        ("12345", "18 characters"),
    ],
)
def test_invalid_number_is_422_and_changes_nothing(
    client: TestClient, services: Services, value: str, reason: str
) -> None:
    before = snapshot(services)
    response = client.post("/fhir/Patient", json=_resident(value), headers=FHIR_JSON)
    assert response.status_code == 422
    issue = response.json()["issue"][0]
    assert reason in issue["diagnostics"]
    assert issue["expression"] == ["Patient.identifier[0].value"]
    assert value not in response.text
    assert snapshot(services) == before


def test_disagreeing_birth_date_and_sex_are_warnings(client: TestClient) -> None:
    number = make_id_number(born="19900307", sequence="123")  # male
    body = _resident(number, birthDate="1991-03-07")
    body["gender"] = "female"
    response = client.post("/fhir/Patient", json=body, headers=RETURN_OUTCOME)
    assert response.status_code == 201
    warnings = [i for i in response.json()["issue"] if i["severity"] == "warning"]
    assert sorted(e for w in warnings for e in w["expression"]) == [
        "Patient.birthDate",
        "Patient.gender",
    ]


def test_legacy_number_is_upgraded_for_matching(client: TestClient) -> None:
    response = client.post(
        "/fhir/Patient",
        json=patient(identifier=[id_identifier("110105491231002")], birthDate="1949-12-31"),
        headers=RETURN_OUTCOME,
    )
    assert response.status_code == 201
    assert any("upgraded" in i["diagnostics"] for i in response.json()["issue"])
    found = client.get(f"/fhir/Patient?identifier={ID_SYSTEM}|11010519491231002X").json()
    assert found["total"] == 1
    assert _id_values(found["entry"][0]["resource"]) == ["110105491231002"]
    second = client.post(
        "/fhir/Patient", json=patient(identifier=[id_identifier("11010519491231002X")])
    )
    assert second.status_code == 409


def test_second_record_for_the_same_number_is_409(client: TestClient, services: Services) -> None:
    number = make_id_number()
    first = _create(client, _resident(number))
    before = snapshot(services)
    response = client.post(
        "/fhir/Patient", json=_resident(number.lower(), name=[{"text": "李四"}]), headers=FHIR_JSON
    )
    assert response.status_code == 409
    assert first["id"] not in response.text  # the holder is not named: no free lookup
    assert snapshot(services) == before
    conditional = client.post(
        "/fhir/Patient",
        json=_resident(number),
        headers={**FHIR_JSON, "If-None-Exist": f"identifier={ID_SYSTEM}|{number}"},
    )
    assert conditional.status_code == 200
    assert conditional.json()["id"] == first["id"]
    # a transaction that would duplicate the resident is refused as a whole
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": patient(), "request": {"method": "POST", "url": "Patient"}},
            {"resource": _resident(number), "request": {"method": "POST", "url": "Patient"}},
        ],
    }
    assert client.post("/fhir", json=bundle, headers=FHIR_JSON).status_code == 409
    assert snapshot(services) == before


def test_two_numbers_on_one_patient_are_refused(client: TestClient) -> None:
    body = patient(
        identifier=[id_identifier(make_id_number()), id_identifier(make_id_number(sequence="125"))]
    )
    response = client.post("/fhir/Patient", json=body, headers=FHIR_JSON)
    assert response.status_code == 422


async def _race(services: Services, requests: list[dict[str, Any]]) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app=create_app(services=services))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers=bearer(services.settings)
    ) as client:
        return await asyncio.gather(*(client.request(**r) for r in requests))


def _patient_count(services: Services) -> int:
    with services.unit.read() as conn:
        return int(
            conn.execute(
                sa.text("SELECT count(*) FROM resource WHERE res_type = 'Patient'")
            ).scalar_one()
        )


def test_twenty_concurrent_creates_of_one_resident_make_one_record(services: Services) -> None:
    number = make_id_number(born="20010911", sequence="246")
    requests = [
        {
            "method": "POST",
            "url": "/fhir/Patient",
            "json": _resident(number, name=[{"text": f"张{i}"}]),
            "headers": FHIR_JSON,
        }
        for i in range(20)
    ]
    responses = asyncio.run(_race(services, requests))
    assert sorted(r.status_code for r in responses) == [201] + [409] * 19
    assert _patient_count(services) == 1


def test_twenty_concurrent_conditional_creates_return_the_one_record(services: Services) -> None:
    number = make_id_number(born="20010912", sequence="248")
    requests = [
        {
            "method": "POST",
            "url": "/fhir/Patient",
            "json": _resident(number),
            "headers": {**FHIR_JSON, "If-None-Exist": f"identifier={ID_SYSTEM}|{number}"},
        }
        for _ in range(20)
    ]
    responses = asyncio.run(_race(services, requests))
    assert sorted(r.status_code for r in responses) == [200] * 19 + [201]
    assert len({r.json()["id"] for r in responses}) == 1
    assert _patient_count(services) == 1


def test_record_number_is_assigned_once_and_kept(client: TestClient, services: Services) -> None:
    system = services.identity.record_system
    body = patient(identifier=[{"system": system, "value": "50000000000099999"}])
    created = _create(client, body)
    numbers = [i["value"] for i in created["identifier"] if i["system"] == system]
    assert len(numbers) == 1 and len(numbers[0]) == 17 and numbers[0] != "50000000000099999"
    other = _create(client, patient())
    assert [i["value"] for i in other["identifier"] if i["system"] == system] != numbers
    # an update that leaves it out keeps it; one that changes it is refused
    update = {k: v for k, v in created.items() if k != "identifier"}
    kept = client.put(f"/fhir/Patient/{created['id']}", json=update, headers=FHIR_JSON).json()
    assert [i["value"] for i in kept["identifier"] if i["system"] == system] == numbers
    forged = {**created, "identifier": [{"system": system, "value": "50000000000099998"}]}
    changed = client.put(f"/fhir/Patient/{created['id']}", json=forged, headers=FHIR_JSON)
    assert changed.status_code == 422


def test_lifecycle_from_birth_certificate_to_death(client: TestClient) -> None:
    mother_number = make_id_number(born="19920101", sequence="224")
    mother = _create(client, patient(identifier=[id_identifier(mother_number)]))
    newborn = _create(
        client,
        patient(
            name=[{"text": "王小宝"}],
            birthDate="2026-11-20",
            gender="male",
            identifier=[{"system": "urn:ehr-service:birth-certificate", "value": "Q500012345"}],
        ),
    )
    record_number = _record_numbers(newborn)
    related = client.post(
        "/fhir/RelatedPerson",
        json={
            "resourceType": "RelatedPerson",
            "patient": {"reference": f"Patient/{newborn['id']}"},
            "relationship": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode",
                            "code": "MTH",
                        }
                    ]
                }
            ],
            "identifier": [id_identifier(mother_number)],
        },
        headers=FHIR_JSON,
    )
    assert related.status_code == 201
    mother_link = {
        **mother,
        "link": [
            {"other": {"reference": f"RelatedPerson/{related.json()['id']}"}, "type": "seealso"}
        ],
    }
    assert (
        client.put(f"/fhir/Patient/{mother['id']}", json=mother_link, headers=FHIR_JSON).status_code
        == 200
    )

    # the ID number arrives later, by an ordinary update; uniqueness is checked then
    taken = {**newborn, "identifier": [*newborn["identifier"], id_identifier(mother_number)]}
    assert (
        client.put(f"/fhir/Patient/{newborn['id']}", json=taken, headers=FHIR_JSON).status_code
        == 409
    )
    wrong = make_id_number(born="20261120", sequence="135")
    with_id = {**newborn, "identifier": [*newborn["identifier"], id_identifier(wrong)]}
    v2 = client.put(f"/fhir/Patient/{newborn['id']}", json=with_id, headers=FHIR_JSON)
    assert v2.status_code == 200
    # a correction: the old number stays in history, the new one is current
    right = make_id_number(born="20261120", sequence="137")
    corrected = {**v2.json(), "identifier": [*newborn["identifier"], id_identifier(right)]}
    v3 = client.put(f"/fhir/Patient/{newborn['id']}", json=corrected, headers=FHIR_JSON)
    assert v3.status_code == 200
    assert _id_values(client.get(f"/fhir/Patient/{newborn['id']}/_history/2").json()) == [wrong]
    assert _id_values(client.get(f"/fhir/Patient/{newborn['id']}").json()) == [right]
    assert client.get(f"/fhir/Patient?identifier={ID_SYSTEM}|{wrong}").json()["total"] == 0
    # the corrected-away number is free again
    assert (
        client.post("/fhir/Patient", json=patient(identifier=[id_identifier(wrong)])).status_code
        == 201
    )
    # death does not close the record
    deceased = {**v3.json(), "deceasedDateTime": "2026-11-27T08:00:00+08:00"}
    v4 = client.put(f"/fhir/Patient/{newborn['id']}", json=deceased, headers=FHIR_JSON)
    assert v4.status_code == 200
    found = client.get(f"/fhir/Patient?identifier={ID_SYSTEM}|{right}").json()
    assert [e["resource"]["id"] for e in found["entry"]] == [newborn["id"]]
    history = client.get(f"/fhir/Patient/{newborn['id']}/_history").json()
    assert [_record_numbers(e["resource"]) for e in history["entry"]] == [record_number] * 4
    mothers = client.get(f"/fhir/RelatedPerson?patient={newborn['id']}&relationship=MTH").json()
    assert mothers["total"] == 1


def test_masked_number_sent_back_unchanged_keeps_the_number(
    client: TestClient, services: Services
) -> None:
    number = make_id_number(born="19770707", sequence="771")
    created = _create(client, _resident(number))
    with _masked_client(services) as masked:
        seen = masked.get(f"/fhir/Patient/{created['id']}").json()
        seen["birthDate"] = "1977-07-07"
        assert (
            masked.put(f"/fhir/Patient/{created['id']}", json=seen, headers=FHIR_JSON).status_code
            == 200
        )
        invented = {**seen, "identifier": [{"system": ID_SYSTEM, "value": "5001**********9999"}]}
        refused = masked.put(f"/fhir/Patient/{created['id']}", json=invented, headers=FHIR_JSON)
        assert refused.status_code == 422
    assert _id_values(client.get(f"/fhir/Patient/{created['id']}").json()) == [number]
    patched = client.patch(
        f"/fhir/Patient/{created['id']}",
        json=[{"op": "replace", "path": "/gender", "value": "male"}],
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert patched.status_code == 200
    assert _id_values(patched.json()) == [number]


def test_no_plaintext_number_in_any_table_or_log(
    client: TestClient, services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    number = make_id_number(born="19660606", sequence="661")
    legacy = "510104660606662"  # 15 digits, upgraded to 18 for matching
    hospital_number = make_id_number(born="19550505", sequence="553")
    created = _create(
        client,
        _resident(
            number,
            text={
                "status": "generated",
                "div": f'<div xmlns="http://www.w3.org/1999/xhtml">ID {number}</div>',
            },
        ),
    )
    client.post("/fhir/Patient", json=patient(identifier=[id_identifier(legacy)]))
    client.post(
        "/fhir/Patient",
        json=patient(identifier=[{"system": "urn:hospital:mrn", "value": hospital_number}]),
    )
    obs = observation(f"Patient/{created['id']}")
    obs["subject"]["identifier"] = id_identifier(number)
    obs["note"] = [{"text": f"patient {number} fasting"}]
    assert client.post("/fhir/Observation", json=obs, headers=FHIR_JSON).status_code == 201
    client.post("/fhir/Patient", json=_resident(number), headers=FHIR_JSON)  # 409
    client.post("/fhir/Patient", json=_resident(number[:17] + "0"), headers=FHIR_JSON)  # 422
    client.post(
        "/fhir/Patient",
        json=_resident(number),
        headers={**FHIR_JSON, "If-None-Exist": f"identifier={ID_SYSTEM}|{number}"},
    )
    client.get(f"/fhir/Patient?identifier={ID_SYSTEM}|{number}")
    client.get(f"/fhir/Observation?subject:identifier={ID_SYSTEM}|{number}")
    client.post(
        "/fhir/Patient/$match",
        json={
            "resourceType": "Parameters",
            "parameter": [{"name": "resource", "resource": _resident(number)}],
        },
        headers=FHIR_JSON,
    )
    secrets = {number, number.lower(), legacy, "51010419660606662", hospital_number}
    with services.unit.read() as conn:
        for table in metadata.sorted_tables:
            for row in conn.execute(sa.select(table)).all():
                text = " ".join(
                    bytes(v).decode("utf-8", "replace")
                    if isinstance(v, bytes | memoryview)
                    else str(v)
                    for v in row
                )
                for secret in secrets:
                    assert secret not in text, f"plaintext ID number in table {table.name}"
    logged = "\n".join(  # the service's own log records (httpx here is the test's client)
        r.getMessage() + str(r.args) + str(r.exc_info)
        for r in caplog.records
        if not r.name.startswith("httpx")
    )
    for secret in secrets:
        assert secret not in logged
    # and what was masked in free text comes back masked, with the number still findable
    shown = client.get(f"/fhir/Patient/{created['id']}").json()
    assert number not in shown["text"]["div"]
    by_hospital = client.get(f"/fhir/Patient?identifier=urn:hospital:mrn|{hospital_number}").json()
    assert by_hospital["total"] == 1
    assert by_hospital["entry"][0]["resource"]["identifier"][0]["value"] == hospital_number


def test_reindex_indexes_sealed_numbers_by_their_blind_tokens(
    client: TestClient, services: Services
) -> None:
    from ehr_service.interactions.reindex import reindex
    from ehr_service.storage.tables import INDEX_TABLES

    number = make_id_number(born="19720202", sequence="721")
    created = _create(client, _resident(number))
    obs = observation(f"Patient/{created['id']}")
    obs["subject"]["identifier"] = id_identifier(number)
    assert client.post("/fhir/Observation", json=obs, headers=FHIR_JSON).status_code == 201

    def rows() -> list[list[tuple[str, ...]]]:
        with services.unit.read() as conn:
            return [
                sorted(tuple(map(str, r)) for r in conn.execute(sa.select(t))) for t in INDEX_TABLES
            ]

    before = rows()
    with services.unit.write() as conn:
        for table in INDEX_TABLES:
            conn.execute(sa.delete(table))
    assert reindex(services) == 2 + PUBLISHED_AT_START
    assert rows() == before
    found = client.get(f"/fhir/Observation?subject:identifier={ID_SYSTEM}|{number}").json()
    assert found["total"] == 1


def test_review_regressions_on_protected_numbers(client: TestClient, services: Services) -> None:
    number = make_id_number(born="19930303", sequence="331")
    created = _create(client, _resident(number, birthDate="1993-03-03"))
    pid = created["id"]
    # a failed JSON Patch test never quotes the value it compared
    failed = client.patch(
        f"/fhir/Patient/{pid}",
        json=[{"op": "test", "path": "/identifier/0/value", "value": "x"}],
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert failed.status_code == 422 and number not in failed.text
    # the reserved seal extension is refused from clients, anywhere
    sealed = patient(
        extension=[{"url": "urn:ehr-service:extension:sealed-id-number", "valueString": number}]
    )
    assert client.post("/fhir/Patient", json=sealed, headers=FHIR_JSON).status_code == 422
    # a resource id that is an ID number would land in every table
    forged = patient(id=number)
    assert client.put(f"/fhir/Patient/{number}", json=forged, headers=FHIR_JSON).status_code == 400
    # percent-encoded digits do not slip past the audit's masking
    encoded = "".join(f"%{ord(c):02X}" for c in number)
    client.get(f"/fhir/Patient?identifier=urn:oid:2.16.156.10011.1.3%7C{encoded}")
    with services.unit.read() as conn:
        audit = [bytes(r[0]) for r in conn.execute(sa.text("SELECT content FROM audit_event"))]
    import base64

    decoded = " ".join(base64.b64decode(q).decode() for c in audit for q in _queries(c))
    assert number not in decoded and encoded not in decoded


def _queries(content: bytes) -> list[str]:
    import orjson

    event = orjson.loads(content)
    return [e["query"] for e in event.get("entity", []) if "query" in e]


def test_masks_that_collide_keep_their_own_numbers(client: TestClient, services: Services) -> None:
    first = make_id_number(born="19700101", sequence="123")
    second = next(  # same first four (5001) and last four characters
        n
        for day in range(1, 29)
        if (n := make_id_number(area="500102", born=f"197101{day:02d}", sequence="123"))[-4:]
        == first[-4:]
    )
    body = _resident(first)
    body["identifier"].append({"system": "urn:old-id", "value": second})
    created = _create(client, body)
    with _masked_client(services) as masked:
        seen = masked.get(f"/fhir/Patient/{created['id']}").json()
        assert [i["value"][:4] + i["value"][-4:] for i in seen["identifier"][:2]] == [
            first[:4] + first[-4:],
            second[:4] + second[-4:],
        ]
        assert (
            masked.put(f"/fhir/Patient/{created['id']}", json=seen, headers=FHIR_JSON).status_code
            == 200
        )
    values = [i["value"] for i in client.get(f"/fhir/Patient/{created['id']}").json()["identifier"]]
    assert values[:2] == [first, second]
