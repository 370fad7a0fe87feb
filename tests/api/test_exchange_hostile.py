"""Regression tests from the review of the signed exchange: a partner cannot change a
resident's record or bypass consent, its token is for /exchange only, big and odd
messages are handled, identifiers and references are taken literally."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from ehr_service.interactions.context import Services
from tests.api.test_exchange import (
    LAB,
    Partner,
    counts,
    female_number,
    message,
    partner_headers,
    post,
    region,  # noqa: F401 - the fixture
)
from tests.helpers import FHIR_JSON, id_identifier, make_id_number, refusal, snapshot

Region = tuple[TestClient, Services, Partner]


def _refuse_sichuan(client: TestClient, pid: str) -> None:
    consent = refusal(pid, region="sichuan")
    assert client.post("/fhir/Consent", json=consent, headers=FHIR_JSON).status_code == 201


def _send(client: TestClient, services: Services, partner: Partner, bundle: dict[str, Any]) -> Any:
    body = json.dumps(bundle).encode()  # the standard library: deeper nesting than orjson
    return post(client, services, body, partner.sign(body))


def test_a_partner_never_changes_a_record_or_escapes_consent(region: Region) -> None:  # noqa: F811
    client, services, partner = region
    first = message(female_number())
    assert post(client, services, first, partner.sign(first)).status_code == 200
    (patient,) = [e["resource"] for e in client.get("/fhir/Patient").json()["entry"]]
    _refuse_sichuan(client, patient["id"])
    evil = orjson.loads(first)
    evil["entry"][0]["resource"]["identifier"] = [{"system": "urn:nomatch", "value": "zzz"}]
    evil["entry"][0]["resource"]["name"] = [{"text": "EVIL"}]
    evil["entry"][1]["resource"]["id"] = "another"
    before = snapshot(services), counts(services)
    response = _send(client, services, partner, evil)
    assert response.status_code == 403, response.text
    assert (snapshot(services), counts(services)) == before
    assert client.get(f"/fhir/Patient/{patient['id']}").json()["meta"]["versionId"] == "1"


def test_a_partner_token_is_for_exchange_only(region: Region) -> None:  # noqa: F811
    client, services, _partner = region
    pid = client.post("/fhir/Patient", json={"resourceType": "Patient"}, headers=FHIR_JSON).json()[
        "id"
    ]
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "category": [LAB],
        "code": {"text": "x"},
        "subject": {"reference": f"Patient/{pid}"},
    }
    response = client.post(
        "/fhir/Observation", json=observation, headers={**FHIR_JSON, **partner_headers(services)}
    )
    assert response.status_code == 403


def test_big_messages_are_accepted(region: Region) -> None:  # noqa: F811
    client, services, partner = region
    bundle = orjson.loads(message(female_number()))
    bundle["entry"][1]["resource"]["note"] = [{"text": "报告" * 100_000}]  # ~600 kB
    response = _send(client, services, partner, bundle)
    assert response.status_code == 200, response.text[:300]


def _deep(levels: int) -> dict[str, Any]:
    node: dict[str, Any] = {"x": 1}
    for _ in range(levels):
        node = {"extension": [{"url": "urn:x", "extension": [node]}]}
    return node


@pytest.mark.parametrize(
    "change",
    [
        lambda b: b["entry"].append(b["entry"][1]),  # the same result twice
        lambda b: b["entry"][0]["resource"].update(identifier=5),
        lambda b: b.update(type=["collection"]),
        lambda b: b["entry"][1]["resource"].update(_deep(100)),
        lambda b: b["entry"][1]["resource"]["subject"].update(
            reference="Patient?identifier=urn:hospital:mrn|V1"
        ),
        lambda b: b["entry"][1]["resource"].update(
            specimen={"reference": "urn:uuid:0a0b0c0d-0000-0000-0000-000000000000"}
        ),
    ],
)
def test_odd_messages_are_400_and_store_nothing(region: Region, change: Any) -> None:  # noqa: F811
    client, services, partner = region
    bundle = orjson.loads(message(female_number()))
    change(bundle)
    before = snapshot(services), counts(services)
    response = _send(client, services, partner, bundle)
    assert response.status_code == 400, response.text[:300]
    assert (snapshot(services), counts(services)) == before


def test_identifiers_are_matched_literally(region: Region) -> None:  # noqa: F811
    client, services, partner = region
    local = {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:hospital:mrn", "value": "A1"}],
    }
    pid = client.post("/fhir/Patient", json=local, headers=FHIR_JSON).json()["id"]
    for value in ("NOPE,A1", "A\\1"):
        bundle = orjson.loads(message(female_number()))
        bundle["entry"][0]["resource"]["identifier"] = [
            {"system": "urn:hospital:mrn", "value": value}
        ]
        response = _send(client, services, partner, bundle)
        assert response.status_code == 200, response.text
        assert response.json()["entry"][0]["response"]["location"].split("/")[1] != pid
    # another identifier leads to a resident with another ID number: refused
    holder = {
        "resourceType": "Patient",
        "identifier": [
            id_identifier(make_id_number("500103", "19800101", "113")),
            {"system": "urn:hospital:mrn", "value": "B2"},
        ],
    }
    client.post("/fhir/Patient", json=holder, headers=FHIR_JSON)
    bundle = orjson.loads(message(female_number()))
    bundle["entry"][0]["resource"]["identifier"].append(
        {"system": "urn:hospital:mrn", "value": "B2"}
    )
    assert _send(client, services, partner, bundle).status_code == 409


def test_new_residents_keep_only_demographics(region: Region) -> None:  # noqa: F811
    client, services, partner = region
    bundle = orjson.loads(message(female_number()))
    bundle["entry"][0]["resource"]["managingOrganization"] = {"reference": "Organization/local"}
    bundle["entry"][0]["resource"]["meta"] = {"security": [{"code": "V"}]}
    assert _send(client, services, partner, bundle).status_code == 200
    (patient,) = [e["resource"] for e in client.get("/fhir/Patient").json()["entry"]]
    assert "managingOrganization" not in patient and "security" not in patient["meta"]


def test_one_residents_refusal_does_not_block_the_others(region: Region) -> None:  # noqa: F811
    client, services, partner = region
    refusing = female_number()
    pid = client.post(
        "/fhir/Patient",
        json={"resourceType": "Patient", "identifier": [id_identifier(refusing)]},
        headers=FHIR_JSON,
    ).json()["id"]
    _refuse_sichuan(client, pid)
    first = orjson.loads(message(refusing))
    second = orjson.loads(message(make_id_number("510104", "19900307", "146"), obs_id="g2"))
    for entry in second["entry"]:
        entry["fullUrl"] = entry["fullUrl"].replace("sc-p1", "sc-p2")
        entry["resource"]["id"] = entry["resource"]["id"].replace("sc-p1", "sc-p2")
    second["entry"][1]["resource"]["subject"]["reference"] = "Patient/sc-p2"
    bundle = {**first, "entry": first["entry"] + second["entry"]}
    response = _send(client, services, partner, bundle)
    assert response.status_code == 200, response.text
    statuses = [e["response"]["status"][:3] for e in response.json()["entry"]]
    assert statuses == ["403", "403", "201", "201"]
    assert client.get("/fhir/Observation").json()["total"] == 1


def test_long_index_values_in_a_partner_message_are_stored(region: Region) -> None:  # noqa: F811
    """Once a poison message (a 500 the partner retried forever): values over 255
    characters in indexed elements of a signed message."""
    client, services, partner = region
    bundle = orjson.loads(message(female_number()))
    result = bundle["entry"][1]["resource"]
    long_code = "c" * 5_000
    result["code"]["coding"].append({"system": "urn:partner:local", "code": long_code})
    response = _send(client, services, partner, bundle)
    assert response.status_code == 200, response.text[:300]
    found = client.get(f"/fhir/Observation?code=urn:partner:local|{long_code}").json()
    assert len(found.get("entry", [])) == 1
