"""CDS Hooks 2.0: discovery, the order-select and order-sign recognition services, with
and without prefetch, from this service's FHIR base and from a hospital's."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import orjson
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from ehr_service.interactions.context import Services
from ehr_service.recognition.rules import RETEST_REASONS, RETEST_SYSTEM
from ehr_service.storage.tables import cds_card
from tests.api.cds_helpers import (
    ALT,
    AST,
    GLUCOSE,
    MEDICATION,
    OWN_SERVER,
    call,
    day,
    draft,
    foreign_patient,
    hook_request,
    resident,
)
from tests.helpers import FHIR_JSON, bearer, refusal


def cards_of(response: Any) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    cards: list[dict[str, Any]] = response.json()["cards"]
    return cards


def stored_cards(services: Services) -> int:
    with services.unit.read() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(cds_card)).scalar_one())


def test_discovery_needs_no_token(client: TestClient) -> None:
    response = client.get("/cds-services", headers={"Authorization": ""})
    assert response.status_code == 200
    services = {s["id"]: s for s in response.json()["services"]}
    assert {s["hook"] for s in services.values()} == {"order-select", "order-sign"}
    for service in services.values():
        assert service["title"] and service["description"]
        assert service["prefetch"] == {"patient": "Patient/{{context.patientId}}"}


def check_card(card: dict[str, Any], ids: dict[str, str], order_id: str) -> None:
    uuid.UUID(card["uuid"])
    assert 0 < len(card["summary"]) < 140
    assert card["indicator"] == "info" and card["source"]["label"]
    assert card["selectionBehavior"] == "at-most-one"
    accept, *retests = card["suggestions"]
    assert all(uuid.UUID(s["uuid"]) for s in card["suggestions"])
    assert accept["isRecommended"] is True
    create, delete = accept["actions"]
    assert delete == {"type": "delete", "description": delete["description"],
                      "resourceId": f"ServiceRequest/{order_id}"}  # fmt: skip
    task = create["resource"]
    assert create["type"] == "create" and task["resourceType"] == "Task"
    assert task["code"]["coding"][0]["code"] == "accepted"
    assert task["focus"] == {"reference": f"ServiceRequest/{order_id}"}
    reasons = [s["actions"][0]["resource"]["reasonCode"]["coding"][0]["code"] for s in retests]
    assert reasons == [r for r in RETEST_REASONS if r != "other"]  # "other" needs text
    assert all(len(s["actions"]) == 1 for s in retests)  # a re-test keeps the order
    assert [r["code"] for r in card["overrideReasons"]] == list(RETEST_REASONS)
    assert all(r["system"] == RETEST_SYSTEM and r["display"] for r in card["overrideReasons"])
    (link,) = card["links"]
    assert link["type"] == "absolute"
    assert link["url"] == f"{OWN_SERVER}/Observation/{ids['glucose']}"
    until = (date.fromisoformat(day(-5)) + timedelta(days=30)).isoformat()
    for shown in (day(-5), until, "测试医院 q1", "chongqing", "LAB-GLU"):
        assert shown in card["detail"]


@pytest.mark.parametrize("hook", ["order-select", "order-sign"])
@pytest.mark.parametrize("prefetched", [True, False], ids=["prefetch", "no-prefetch"])
def test_a_recognisable_result_gets_a_card(
    client: TestClient, services: Services, hook: str, prefetched: bool
) -> None:
    ids = resident(client)
    pid = ids["patient"]
    orders = [draft("glu", GLUCOSE, pid), draft("alt", ALT, pid), draft("ast", AST, pid),
              MEDICATION]  # fmt: skip
    prefetch = {"patient": {"resourceType": "Patient", "id": pid}} if prefetched else None
    (card,) = cards_of(call(client, hook, hook_request(hook, pid, orders, prefetch=prefetch)))
    # the expired ALT and the AST of an institution without QC get no card
    check_card(card, ids, "glu")
    assert stored_cards(services) == 1
    stats = client.get("/fhir/$recognition-stats", params={"groupBy": "item"}).json()
    offered = {g["part"][0]["valueString"]: g["part"][1]["valueInteger"]
               for g in stats["parameter"] if g["name"] == "group"}  # fmt: skip
    assert offered == {"LAB-GLU": 1}


def test_order_select_advises_on_the_selected_orders_only(client: TestClient) -> None:
    ids = resident(client)
    pid = ids["patient"]
    orders = [draft("glu", GLUCOSE, pid), draft("alt", ALT, pid)]
    body = hook_request("order-select", pid, orders, selections=["ServiceRequest/alt"])
    assert cards_of(call(client, "order-select", body)) == []
    body = hook_request("order-select", pid, orders, selections=["ServiceRequest/glu"])
    assert len(cards_of(call(client, "order-select", body))) == 1


def test_expired_and_unqualified_results_get_no_card(client: TestClient) -> None:
    ids = resident(client)
    pid = ids["patient"]
    for loinc in (ALT, AST):  # expired; performed where quality control had not passed
        body = hook_request("order-sign", pid, [draft("x", loinc, pid)])
        assert cards_of(call(client, "order-sign", body)) == []


def test_english_cards(client: TestClient) -> None:
    ids = resident(client)
    body = hook_request("order-sign", ids["patient"], [draft("glu", GLUCOSE, ids["patient"])])
    (card,) = cards_of(call(client, "order-sign", body, **{"Accept-Language": "en-GB,zh;q=0.5"}))
    assert card["summary"].startswith("Glucose") and "recognisable" in card["summary"]
    assert card["suggestions"][0]["label"] == "Reuse this result and cancel the order"


def test_refused_consent_reveals_no_result(client: TestClient, services: Services) -> None:
    ids = resident(client)
    pid = ids["patient"]
    consent = refusal(pid, organization="Organization/h9")
    assert client.post("/fhir/Consent", json=consent, headers=FHIR_JSON).status_code == 201
    refused = bearer(services.settings, "user/*.rs user/Task.c", organization="h9")
    body = hook_request("order-sign", pid, [draft("glu", GLUCOSE, pid)])
    response = call(client, "order-sign", body, **refused)
    assert cards_of(response) == []
    for secret in (ids["glucose"], "q1", day(-5)):
        assert secret not in response.text
    assert stored_cards(services) == 0
    other = bearer(services.settings, "user/*.rs user/Task.c", organization="h1")
    assert len(cards_of(call(client, "order-sign", body, **other))) == 1  # not refused


def test_a_hospital_server_with_prefetch(client: TestClient) -> None:
    """The client's own patient id, resolved here by the resident ID number; its
    fhirServer is not needed (nothing to fetch) and not trusted."""
    ids = resident(client)
    orders = [draft("glu", GLUCOSE, "1288992")]
    body = hook_request("order-sign", "1288992", orders, fhir_server="https://his.example.org/fhir",
                        prefetch={"patient": foreign_patient(ids)})  # fmt: skip
    (card,) = cards_of(call(client, "order-sign", body))
    task = card["suggestions"][0]["actions"][0]["resource"]
    assert task["for"] == {"reference": "Patient/1288992"}  # as the client knows the patient
    reused = task["input"][1]["valueReference"]["reference"]
    assert reused == f"{OWN_SERVER}/Observation/{ids['glucose']}"  # absolute: another server
    body["prefetch"] = {"patient": None}  # the client has no such patient: no advice
    assert cards_of(call(client, "order-sign", body)) == []


class _Hospital(BaseHTTPRequestHandler):
    patient: ClassVar[dict[str, Any]] = {}
    token = "hospital-token"
    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.seen.append(self.headers.get("Authorization", ""))
        if self.headers.get("Authorization") != f"Bearer {self.token}":
            self.send_response(401)
            self.end_headers()
            return
        known = self.path == f"/fhir/Patient/{self.patient.get('id')}"
        body = orjson.dumps(self.patient if known else {"resourceType": "OperationOutcome"})
        self.send_response(200 if known else 404)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        return


@pytest.fixture
def hospital() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hospital)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/fhir"
    server.shutdown()
    server.server_close()


def test_fetched_from_a_trusted_hospital_server(
    make_client: Callable[..., TestClient], hospital: str
) -> None:
    client = make_client(cds_fhir_servers=[hospital])
    ids = resident(client)
    _Hospital.patient.clear()
    _Hospital.patient.update(foreign_patient(ids))
    orders = [draft("glu", GLUCOSE, "1288992")]
    body = hook_request("order-select", "1288992", orders, fhir_server=hospital,
                        token=_Hospital.token)  # fmt: skip
    assert len(cards_of(call(client, "order-select", body))) == 1
    assert _Hospital.seen[-1] == f"Bearer {_Hospital.token}"
    body["fhirAuthorization"]["access_token"] = "wrong"  # the hospital refuses: 412
    refused = call(client, "order-select", body)
    assert refused.status_code == 412 and "401" in refused.text
    body["context"]["patientId"] = "unknown"  # the hospital does not know the patient
    body["fhirAuthorization"]["access_token"] = _Hospital.token
    for entry in body["context"]["draftOrders"]["entry"]:
        entry["resource"]["subject"]["reference"] = "Patient/unknown"
    assert cards_of(call(client, "order-select", body)) == []


def test_untrusted_or_unreachable_servers_are_refused(
    make_client: Callable[..., TestClient], services: Services
) -> None:
    client = make_client(cds_fhir_servers=["http://127.0.0.1:9/fhir"])
    ids = resident(client)
    orders = [draft("glu", GLUCOSE, ids["patient"])]
    for server, token, says in (
        ("https://evil.example/fhir", "t", "not a FHIR server this service trusts"),
        ("http://127.0.0.1:9/fhir", "t", "could not be reached"),
        ("http://127.0.0.1:9/fhir", None, "needs fhirAuthorization"),
        (None, None, "send prefetch.patient"),
    ):
        body = hook_request("order-sign", ids["patient"], orders, fhir_server=server, token=token)
        response = call(client, "order-sign", body)
        assert response.status_code == 412, response.text
        assert response.json()["resourceType"] == "OperationOutcome"
        assert says in response.json()["issue"][0]["diagnostics"]
    assert stored_cards(services) == 0
