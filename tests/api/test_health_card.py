"""The e-health card: a card ID bound to one resident (unique by the database, stored
blind-indexed and sealed, never in plaintext), resolved from a scanned QR code
through the configured verifier (here the local test double) for hospitals, each
use audited with its scene code and shown in the resident's access log."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from ehr_service.app import create_app
from ehr_service.config import Settings
from ehr_service.interactions.context import Services
from ehr_service.mpi.health_card import LocalTestCardVerifier
from ehr_service.storage.tables import health_card, resource, resource_version
from tests.helpers import FHIR_JSON, audit_get, bearer, patient, snapshot

SECRET = "card-test-secret"


def _params(**values: Any) -> dict[str, Any]:
    kinds = {"cardId": "valueString", "qrCode": "valueString", "verificationCode": "valueString",
             "scene": "valueCode"}  # fmt: skip
    return {"resourceType": "Parameters",
            "parameter": [{"name": k, kinds[k]: v} for k, v in values.items()]}  # fmt: skip


@pytest.fixture
def card_client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client(health_card_verifier="local-test", health_card_test_secret=SECRET)


def _services(client: TestClient) -> Services:
    services: Services = client.app.state.services  # type: ignore[attr-defined]
    return services


def _bind(client: TestClient, pid: str, card: str) -> Any:
    return client.post(f"/fhir/Patient/{pid}/$bind-health-card", json=_params(cardId=card),
                       headers=FHIR_JSON)  # fmt: skip


def _resolve(client: TestClient, **values: Any) -> Any:
    return client.post("/fhir/Patient/$resolve-health-card", json=_params(**values),
                       headers=FHIR_JSON)  # fmt: skip


def test_bind_once_resolve_and_audit_each_use(card_client: TestClient) -> None:
    services = _services(card_client)
    pid = card_client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON).json()["id"]
    other = card_client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON).json()["id"]
    card = secrets.token_hex(32)
    assert _bind(card_client, pid, card).status_code == 200
    assert _bind(card_client, pid, card.upper()).status_code == 200  # the same card, again
    taken = _bind(card_client, other, card)
    assert taken.status_code == 409 and taken.json()["resourceType"] == "OperationOutcome"
    # never in plaintext: not in the card table, not in any resource or version
    with services.unit.read() as conn:
        (row,) = conn.execute(sa.select(health_card)).all()
        stored = [bytes(r.content) for r in conn.execute(sa.select(resource)).all()]
        stored += [bytes(r.content) for r in conn.execute(sa.select(resource_version)).all()
                   if r.content is not None]  # fmt: skip
    assert card.upper() not in str(tuple(row)) and card not in str(tuple(row))
    assert row.patient_id == pid
    assert not any(card.upper().encode() in c or card.encode() in c for c in stored)
    # a dynamic code made just now: the Patient; a second use of it is refused
    double = LocalTestCardVerifier(SECRET)
    dynamic = double.dynamic(card, int(time.time()) + 60)
    found = _resolve(card_client, qrCode=dynamic, scene="lab-report")
    assert found.status_code == 200, found.text
    assert found.json()["resourceType"] == "Patient" and found.json()["id"] == pid
    replayed = _resolve(card_client, qrCode=dynamic, scene="lab-report")
    assert replayed.status_code == 403
    # a static code needs the resident's SMS code
    static = f"SQR.{card}"
    assert _resolve(card_client, qrCode=static, scene="registration").status_code == 403
    wrong = _resolve(card_client, qrCode=static, verificationCode="000000", scene="registration")
    assert wrong.status_code == 403
    right = _resolve(card_client, qrCode=static, verificationCode=double.sms_code(card),
                     scene="registration")  # fmt: skip
    assert right.status_code == 200 and right.json()["id"] == pid
    # each use on the trail with its scene; the resident sees them
    uses = audit_get(card_client, f"/fhir/AuditEvent?patient={pid}&subtype=health-card-use")
    assert len(uses.json()["entry"]) == 2
    headers = bearer(services.settings, "patient/*.rs", patient=pid)
    with TestClient(create_app(services=services), raise_server_exceptions=False,
                    headers=headers) as me:  # fmt: skip
        log = me.get("/citizen/v1/me/access-log").json()["items"]
    scenes = sorted(i["healthCard"]["scene"] for i in log if "healthCard" in i)
    assert scenes == ["lab-report", "registration"]


def test_bad_cards_and_codes_change_nothing(card_client: TestClient) -> None:
    services = _services(card_client)
    pid = card_client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON).json()["id"]
    card = secrets.token_hex(32)
    assert _bind(card_client, pid, card).status_code == 200
    before = snapshot(services)
    for bad in ("abc", card[:-1] + "g", card + "0", "　" * 64, 7):
        answer = _bind(card_client, pid, bad)  # type: ignore[arg-type]
        assert answer.status_code == 400, (bad, answer.text)
    assert _bind(card_client, "no-such-patient", secrets.token_hex(32)).status_code == 404
    double = LocalTestCardVerifier(SECRET)
    forged = LocalTestCardVerifier("another-secret").dynamic(card, int(time.time()) + 60)
    expired = double.dynamic(card, int(time.time()) - 1)
    for values, status in (
        ({"qrCode": forged, "scene": "lab-report"}, 403),
        ({"qrCode": expired, "scene": "lab-report"}, 403),
        ({"qrCode": "hello", "scene": "lab-report"}, 403),
        ({"qrCode": f"SQR.{card}", "verificationCode": "一二三", "scene": "pharmacy"}, 403),
        ({"qrCode": double.dynamic(card, int(time.time()) + 60), "scene": "teleport"}, 400),
        ({"qrCode": double.dynamic(card, int(time.time()) + 60)}, 400),
        ({"scene": "lab-report"}, 400),
        ({"qrCode": double.dynamic(secrets.token_hex(32), int(time.time()) + 60),
          "scene": "lab-report"}, 404),  # a genuine card no one here holds
    ):  # fmt: skip
        answer = _resolve(card_client, **values)
        assert answer.status_code == status, (values, answer.text)
        assert answer.json()["resourceType"] == "OperationOutcome"
    with services.unit.read() as conn:
        assert len(conn.execute(sa.select(health_card)).all()) == 1
    assert snapshot(services) == before
    citizen = bearer(services.settings, "patient/*.rs", patient=pid)
    as_citizen = {**FHIR_JSON, **citizen}
    refused = card_client.post("/fhir/Patient/$resolve-health-card", headers=as_citizen,
                               json=_params(qrCode="x", scene="lab-report"))  # fmt: skip
    assert refused.status_code == 403  # for hospitals, not citizens


def test_without_a_verifier_resolution_is_not_offered(client: TestClient) -> None:
    answer = _resolve(client, qrCode="DQR.x", scene="lab-report")
    assert answer.status_code == 501
    assert "EHR_HEALTH_CARD_VERIFIER" in answer.json()["issue"][0]["diagnostics"]


def test_the_test_double_is_refused_in_production() -> None:
    with pytest.raises(ValueError, match="test double"):
        Settings(environment="production", health_card_verifier="local-test",
                 health_card_test_secret="x", database_url="sqlite://")  # fmt: skip
