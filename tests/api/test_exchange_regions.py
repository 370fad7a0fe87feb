"""Two regions in one process (each its own database, keys and app): push with
receipts, retries and dead letters, and pull from the partner's feed. The
two-process version over real sockets is tests/e2e/test_two_regions.py."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from ehr_service.app import build_services, create_app
from ehr_service.config import Settings
from ehr_service.exchange.partners import PartnerRegistry
from ehr_service.exchange.service import Exchange
from ehr_service.fhir.primitives import utc_now
from ehr_service.interactions.context import RequestContext, Services
from ehr_service.recognition.institutions import REGION_URL, quality_control_extension
from ehr_service.security.caller import SERVICE
from ehr_service.storage.tables import exchange_message, exchange_outbox
from tests.helpers import FHIR_JSON, bearer, id_identifier, make_id_number, refusal

LAB = [
    {
        "coding": [
            {
                "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                "code": "laboratory",
            }
        ]
    }
]
TYPES = ["Observation", "DiagnosticReport", "ImagingStudy", "Organization"]


@dataclass
class Region:
    name: str
    services: Services
    client: TestClient

    @property
    def url(self) -> str:
        return f"http://{self.name}.test"

    def exchange(self, client: httpx.Client | None = None) -> Exchange:
        return Exchange(self.services, client=client)

    def ctx(self) -> RequestContext:
        return RequestContext(self.services, f"{self.url}/fhir", "test", caller=SERVICE)


def _region(name: str, tmp_path: Path, template: Path, **settings: Any) -> Region:
    database = tmp_path / f"{name}.sqlite3"
    shutil.copyfile(template, database)
    services = build_services(
        Settings(
            environment="test",
            database_url=f"sqlite:///{database}",
            data_dir=tmp_path / name,
            exchange_id=name,
            exchange_max_attempts=3,
            exchange_feed_settle_seconds=0,
            **settings,
        )
    )
    client = TestClient(
        create_app(services=services),
        base_url=f"http://{name}.test",
        raise_server_exceptions=False,
        headers=bearer(services.settings),
    )
    client.__enter__()  # runs the lifespan: the region's first signing key
    return Region(name, services, client)


def _register(home: Region, partner: Region, tmp_path: Path) -> None:
    """``home`` registers ``partner``: its JWKS, endpoint, and a token it issued us."""
    jwks = tmp_path / f"{partner.name}-jwks-for-{home.name}.json"
    jwks.write_bytes(orjson.dumps(partner.client.get("/.well-known/jwks.json").json()))
    PartnerRegistry(home.services.unit).add(
        partner.name,
        name=partner.name.title(),
        region=partner.name,
        audience=partner.name,
        jwks=str(jwks),
        endpoint=f"{partner.url}/exchange/v1/bundles",
        allowed_types=TYPES,
    )
    token = bearer(
        partner.services.settings,
        " ".join(f"system/{t}.cu" for t in TYPES),
        subject=home.name,
        client_id=home.name,
    )["Authorization"].split(" ", 1)[1]
    target = home.services.settings.data_dir / "keys" / "partner-tokens" / f"{partner.name}.jwt"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(token)


@pytest.fixture
def regions(sqlite_template: Path, tmp_path: Path) -> Iterator[tuple[Region, Region]]:
    chongqing = _region("chongqing", tmp_path, sqlite_template)
    sichuan = _region("sichuan", tmp_path, sqlite_template)
    _register(chongqing, sichuan, tmp_path)
    _register(sichuan, chongqing, tmp_path)
    yield chongqing, sichuan
    for region in (chongqing, sichuan):
        region.client.__exit__(None, None, None)
        region.services.database.dispose()


def _resident_with_result(region: Region, number: str, value: float = 5.4) -> tuple[str, str]:
    patient = {
        "resourceType": "Patient",
        "identifier": [id_identifier(number)],
        "name": [{"family": "张", "given": ["伟"]}],
        "gender": "male",
        "birthDate": "1975-06-01",
    }
    found = region.client.get(
        "/fhir/Patient", params={"identifier": f"{id_identifier(number)['system']}|{number}"}
    ).json()
    if found["total"]:
        pid = found["entry"][0]["resource"]["id"]
    else:
        pid = region.client.post("/fhir/Patient", json=patient, headers=FHIR_JSON).json()["id"]
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "category": LAB,
        "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
        "subject": {"reference": f"Patient/{pid}"},
        "valueQuantity": {"value": value, "unit": "mmol/L"},
    }
    created = region.client.post("/fhir/Observation", json=observation, headers=FHIR_JSON)
    assert created.status_code == 201
    return pid, created.json()["id"]


def _rows(region: Region) -> list[Any]:
    with region.services.unit.read() as conn:
        return conn.execute(sa.select(exchange_outbox).order_by(exchange_outbox.c.seq)).all()


def _received(region: Region, number: str) -> list[dict[str, Any]]:
    found = region.client.get(
        "/fhir/Observation",
        params={"subject:Patient.identifier": f"{id_identifier(number)['system']}|{number}"},
    ).json()
    return [e["resource"] for e in found.get("entry", [])]


def test_push_delivers_with_a_verified_receipt_and_provenance(
    regions: tuple[Region, Region],
) -> None:
    chongqing, sichuan = regions
    number = make_id_number("500103", "19750601", "135")
    _, obs_id = _resident_with_result(chongqing, number)
    assert [r.state for r in _rows(chongqing)] == ["pending"]
    report = chongqing.exchange(client=sichuan.client).outbound.push()
    assert (report.sent, report.failed, report.errors) == (1, 0, [])
    assert [r.state for r in _rows(chongqing)] == ["sent"]
    received = _received(sichuan, number)
    assert len(received) == 1 and received[0]["valueQuantity"]["value"] == 5.4
    provenance = sichuan.client.get(
        "/fhir/Provenance", params={"target": f"Observation/{received[0]['id']}"}
    ).json()
    assert provenance["total"] == 1
    assert provenance["entry"][0]["resource"]["agent"][0]["who"]["identifier"]["value"] == (
        "chongqing"
    )
    # Sichuan's new record for the resident carries the ID number, sealed at rest
    patients = sichuan.client.get("/fhir/Patient").json()
    assert patients["total"] == 1
    assert id_identifier(number) in patients["entry"][0]["resource"]["identifier"]
    # Chongqing keeps what it sent and Sichuan's signed receipt; both verify again
    with chongqing.services.unit.read() as conn:
        sent = conn.execute(sa.select(exchange_message)).one()
    assert sent.direction == "out" and sent.status == 200 and sent.response_signature
    assert [v.ok for v in chongqing.exchange().archive.verify_all()] == [True]
    assert [v.ok for v in sichuan.exchange().archive.verify_all()] == [True]
    # nothing is echoed back: Sichuan does not queue what it received
    assert _rows(sichuan) == []
    assert obs_id not in {r["id"] for r in received}  # Sichuan's own id for it


def test_failed_pushes_back_off_then_dead_letter_then_revive(
    regions: tuple[Region, Region],
) -> None:
    chongqing, sichuan = regions
    _resident_with_result(chongqing, make_id_number("500103", "19750601", "135"))
    calls: list[int] = []

    def down(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(503, text="maintenance")

    outbound = chongqing.exchange(client=httpx.Client(transport=httpx.MockTransport(down))).outbound
    now = utc_now()
    report = outbound.push(now=now)
    assert (report.sent, report.failed, report.dead) == (0, 1, 0)
    (row,) = _rows(chongqing)
    assert row.attempts == 1 and row.state == "pending" and "503" in row.last_error
    assert row.next_attempt >= now + timedelta(seconds=29)  # backed off
    assert outbound.push(now=now).failed == 0 and len(calls) == 1  # not due yet
    outbound.push(now=now + timedelta(minutes=2))
    outbound.push(now=now + timedelta(minutes=5))
    (row,) = _rows(chongqing)
    assert row.state == "dead" and row.attempts == 3 and len(calls) == 3
    assert outbound.push(now=now + timedelta(days=1)).failed == 0  # dead rows wait
    # the partner is back; an operator revives the dead letters
    from ehr_service.storage import exchange as store

    with chongqing.services.unit.write() as conn:
        assert store.revive_dead(conn, "sichuan", utc_now()) == 1
    assert chongqing.exchange(client=sichuan.client).outbound.push().sent == 1
    assert [r.state for r in _rows(chongqing)] == ["sent"]


def test_a_receipt_that_does_not_verify_is_not_a_delivery(regions: tuple[Region, Region]) -> None:
    chongqing, sichuan = regions
    _resident_with_result(chongqing, make_id_number("500103", "19750601", "135"))

    def forged(request: httpx.Request) -> httpx.Response:
        real = sichuan.client.post(
            str(request.url), content=request.content, headers=dict(request.headers)
        )
        signature = {"X-Exchange-Signature": real.headers["X-Exchange-Signature"]}
        return httpx.Response(200, content=real.content.replace(b"201", b"202"), headers=signature)

    client = httpx.Client(transport=httpx.MockTransport(forged))
    report = chongqing.exchange(client=client).outbound.push()
    assert report.sent == 0 and report.failed == 1
    assert "bad-signature" in report.errors[0] or "signature" in report.errors[0]


def test_pull_reads_the_partner_feed_from_the_cursor(regions: tuple[Region, Region]) -> None:
    chongqing, sichuan = regions
    number = make_id_number("510104", "19750601", "135")
    _resident_with_result(sichuan, number, 4.9)
    _resident_with_result(sichuan, number, 5.1)
    outbound = chongqing.exchange(client=sichuan.client).outbound
    assert outbound.pull("sichuan", chongqing.ctx()) == 2
    values = sorted(r["valueQuantity"]["value"] for r in _received(chongqing, number))
    assert values == [4.9, 5.1]
    # the cursor moved: pulling again brings nothing new, then only what is new
    assert outbound.pull("sichuan", chongqing.ctx()) == 0
    _resident_with_result(sichuan, number, 5.6)
    assert outbound.pull("sichuan", chongqing.ctx()) == 1
    assert len(_received(chongqing, number)) == 3
    with chongqing.services.unit.read() as conn:
        directions = {r.direction for r in conn.execute(sa.select(exchange_message)).all()}
    assert directions == {"pull"}
    assert all(v.ok for v in chongqing.exchange().archive.verify_all())


def test_the_in_process_worker_pushes_on_its_own(sqlite_template: Path, tmp_path: Path) -> None:
    import time

    chongqing = _region("chongqing", tmp_path, sqlite_template, exchange_push_interval_seconds=0.1)
    sichuan = _region("sichuan", tmp_path, sqlite_template)
    try:
        _register(chongqing, sichuan, tmp_path)
        _register(sichuan, chongqing, tmp_path)
        chongqing.client.app.state.exchange.outbound.client = sichuan.client  # type: ignore[attr-defined]
        number = make_id_number("500103", "19750601", "135")
        _resident_with_result(chongqing, number)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not _received(sichuan, number):
            time.sleep(0.1)
        assert len(_received(sichuan, number)) == 1
        assert [r.state for r in _rows(chongqing)] == ["sent"]
    finally:
        for region in (chongqing, sichuan):
            region.client.__exit__(None, None, None)  # stops the worker
            region.services.database.dispose()


def test_a_result_from_the_partner_region_is_recognised_for_a_new_order(
    regions: tuple[Region, Region],
) -> None:
    """Produced in Sichuan at a quality-controlled hospital, sent through the signed
    exchange, recognised in Chongqing for a new order, decision recorded, stats up."""
    from datetime import timedelta

    from ehr_service.recognition.institutions import REGION_URL, quality_control_extension

    chongqing, sichuan = regions
    hospital = {
        "resourceType": "Organization",
        "id": "wch",
        "name": "四川大学华西医院",
        "extension": [
            {"url": REGION_URL, "valueCode": "sichuan"},
            quality_control_extension(
                "lab-chemistry", "NCCL EQA", "2026", True, "2026-01-01", "2027-12-31"
            ),
        ],
    }
    assert (
        sichuan.client.put("/fhir/Organization/wch", json=hospital, headers=FHIR_JSON).status_code
        == 201
    )
    number = make_id_number("510104", "19750601", "135")
    patient = {"resourceType": "Patient", "identifier": [id_identifier(number)], "gender": "male"}
    sc_pid = sichuan.client.post("/fhir/Patient", json=patient, headers=FHIR_JSON).json()["id"]
    produced = (utc_now() - timedelta(days=2)).isoformat()
    glucose = {
        "resourceType": "Observation",
        "status": "final",
        "category": LAB,
        "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
        "subject": {"reference": f"Patient/{sc_pid}"},
        "performer": [{"reference": "Organization/wch"}],
        "effectiveDateTime": produced,
        "valueQuantity": {"value": 6.2, "unit": "mmol/L"},
    }
    assert (
        sichuan.client.post("/fhir/Observation", json=glucose, headers=FHIR_JSON).status_code == 201
    )
    assert sichuan.exchange(client=chongqing.client).outbound.push().sent == 1

    # in Chongqing: the resident is seen for a new order of a glucose test
    received = _received(chongqing, number)
    assert len(received) == 1
    assert "川渝HR" in [t["code"] for t in received[0]["meta"].get("tag", [])]
    cq_pid = received[0]["subject"]["reference"].split("/")[1]
    order = {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "subject": {"reference": f"Patient/{cq_pid}"},
        "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
    }
    sr = chongqing.client.post("/fhir/ServiceRequest", json=order, headers=FHIR_JSON).json()["id"]
    by_order = {"name": "serviceRequest", "valueReference": {"reference": f"ServiceRequest/{sr}"}}
    offer = chongqing.client.post(
        f"/fhir/Patient/{cq_pid}/$recognizable-results",
        json={"resourceType": "Parameters", "parameter": [by_order]},
        headers=FHIR_JSON,
    )
    assert offer.status_code == 200, offer.text
    (result,) = [p for p in offer.json()["parameter"] if p["name"] == "result"]
    parts = {p["name"]: p for p in result["part"]}
    assert parts["recognizable"]["valueBoolean"] is True
    assert parts["region"]["valueCode"] == "sichuan"
    assert parts["resource"]["valueReference"]["reference"] == f"Observation/{received[0]['id']}"
    decision = chongqing.client.post(
        f"/fhir/Patient/{cq_pid}/$recognition-decision",
        json={
            "resourceType": "Parameters",
            "parameter": [
                by_order,
                {"name": "decision", "valueCode": "accepted"},
                {"name": "result", "valueReference": parts["resource"]["valueReference"]},
            ],
        },
        headers=FHIR_JSON,
    )
    assert decision.status_code == 201, decision.text
    assert decision.json()["focus"]["reference"] == f"ServiceRequest/{sr}"
    stats = chongqing.client.get("/fhir/$recognition-stats", params={"groupBy": "region"}).json()
    groups = {
        g["part"][0]["valueString"]: {p["name"]: p for p in g["part"]}
        for g in stats["parameter"]
        if g["name"] == "group"
    }
    assert groups["sichuan"]["accepted"]["valueInteger"] == 1
    assert groups["sichuan"]["offered"]["valueInteger"] == 1
    assert groups["sichuan"]["costAvoided"]["valueMoney"]["value"] == 4.0


def test_a_refusal_after_queuing_withdraws_the_result(regions: tuple[Region, Region]) -> None:
    chongqing, sichuan = regions
    number = make_id_number("500103", "19750601", "135")
    pid, _ = _resident_with_result(chongqing, number)
    consent = refusal(pid, region="sichuan")
    assert (
        chongqing.client.post("/fhir/Consent", json=consent, headers=FHIR_JSON).status_code == 201
    )
    report = chongqing.exchange(client=sichuan.client).outbound.push()
    assert report.sent == 0 and report.failed == 0
    assert [r.state for r in _rows(chongqing)] == ["withdrawn"]
    assert _received(sichuan, number) == []


def test_a_receipt_for_another_message_is_not_a_delivery(regions: tuple[Region, Region]) -> None:
    chongqing, sichuan = regions
    _resident_with_result(chongqing, make_id_number("500103", "19750601", "135"))
    earlier: list[httpx.Response] = []

    def replayed(request: httpx.Request) -> httpx.Response:
        real = sichuan.client.post(
            str(request.url), content=request.content, headers=dict(request.headers)
        )
        if not earlier:
            earlier.append(real)
            return httpx.Response(503)
        first = earlier[0]  # a valid receipt, but for the first attempt's message
        return httpx.Response(
            200,
            content=first.content,
            headers={"X-Exchange-Signature": first.headers["X-Exchange-Signature"]},
        )

    client = httpx.Client(transport=httpx.MockTransport(replayed))
    outbound = chongqing.exchange(client=client).outbound
    outbound.push()
    from datetime import timedelta

    report = outbound.push(now=utc_now() + timedelta(minutes=5))
    assert report.sent == 0 and "another message" in report.errors[0]


def test_results_a_partner_sent_are_never_queued_back_when_re_marked(
    regions: tuple[Region, Region],
) -> None:
    """A partner's message that amends its institution re-marks the results it sent
    before: those new versions are the partner's, not ours to send on."""
    chongqing, sichuan = regions

    def hospital(passed: bool) -> dict[str, Any]:
        return {
            "resourceType": "Organization",
            "id": "wch-echo",
            "name": "WCH",
            "extension": [
                {"url": REGION_URL, "valueCode": "sichuan"},
                quality_control_extension(
                    "lab-chemistry", "NCCL EQA", "2026", passed, "2020-01-01", "2030-12-31"
                ),
            ],
        }

    sichuan.client.put("/fhir/Organization/wch-echo", json=hospital(True), headers=FHIR_JSON)
    number = make_id_number("510104", "19750601", "135")
    pid = sichuan.client.post(
        "/fhir/Patient",
        json={"resourceType": "Patient", "identifier": [id_identifier(number)]},
        headers=FHIR_JSON,
    ).json()["id"]

    def glucose(value: float) -> dict[str, Any]:
        return {
            "resourceType": "Observation",
            "status": "final",
            "category": LAB,
            "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
            "subject": {"reference": f"Patient/{pid}"},
            "performer": [{"reference": "Organization/wch-echo"}],
            "effectiveDateTime": (utc_now() - timedelta(days=2)).isoformat(),
            "valueQuantity": {"value": value, "unit": "mmol/L"},
        }

    sichuan.client.post("/fhir/Observation", json=glucose(6.2), headers=FHIR_JSON)
    assert sichuan.exchange(client=chongqing.client).outbound.push().sent == 1
    sichuan.client.put("/fhir/Organization/wch-echo", json=hospital(False), headers=FHIR_JSON)
    sichuan.client.post("/fhir/Observation", json=glucose(7.1), headers=FHIR_JSON)
    assert sichuan.exchange(client=chongqing.client).outbound.push().sent >= 1
    assert len(_received(chongqing, number)) == 2
    assert _rows(chongqing) == []  # nothing of Sichuan's is queued back to Sichuan
    assert len(_received(sichuan, number)) == 2
