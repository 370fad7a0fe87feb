"""Inbound signed exchange, outbox, feed and re-verification, in one region
(Chongqing) with the partner region (Sichuan) played by the test: it holds its own
key, signs with the envelope module, and presents a token of its own client id."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from joserfc.jwk import ECKey, KeySet

from ehr_service.exchange import envelope
from ehr_service.exchange.partners import PartnerRegistry
from ehr_service.exchange.service import Exchange
from ehr_service.interactions.context import Services
from ehr_service.storage.tables import audit_event, exchange_message, exchange_outbox, resource
from tests.helpers import FHIR_JSON, bearer, id_identifier, make_id_number, refusal, snapshot

HTU = "http://testserver/exchange/v1/bundles"
PARTNER_SCOPES = "system/Observation.cu system/DiagnosticReport.cu system/ImagingStudy.cu"
LAB = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "laboratory",
        }
    ]
}


class Partner:
    """The Sichuan side, as far as Chongqing can see it."""

    def __init__(self, tmp_path: Path) -> None:
        self.key = ECKey.generate_key("P-256", private=True)
        self.kid = self.key.thumbprint()
        self.jwks_path = tmp_path / "sichuan-jwks.json"
        self.publish(self.key)

    def publish(self, *keys: ECKey, statuses: dict[str, str] | None = None) -> None:
        document = {
            "keys": [
                k.as_dict(private=False)
                | {"kid": k.thumbprint(), "status": (statuses or {}).get(k.thumbprint(), "active")}
                for k in keys
            ]
        }
        self.jwks_path.write_bytes(orjson.dumps(document))

    def sign(self, body: bytes, key: ECKey | None = None, **overrides: Any) -> str:
        key = key or self.key
        fields: dict[str, Any] = {
            "kid": key.thumbprint(),
            "alg": "ES256",
            "iss": "sichuan",
            "aud": "chongqing",
            "htm": "POST",
            "htu": HTU,
        }
        fields.update(overrides)
        return envelope.sign(body, key, **fields)


@pytest.fixture
def region(
    make_services: Callable[..., Services], tmp_path: Path
) -> tuple[TestClient, Services, Partner]:
    services = make_services(exchange_id="chongqing", exchange_feed_settle_seconds=5.0)
    from ehr_service.app import create_app

    client = TestClient(
        create_app(services=services),
        raise_server_exceptions=False,
        headers=bearer(services.settings),
    )
    client.__enter__()
    partner = Partner(tmp_path)
    add_sichuan(services, partner, ["Observation", "DiagnosticReport", "ImagingStudy"])
    yield client, services, partner  # type: ignore[misc]
    client.__exit__(None, None, None)


def add_sichuan(services: Services, partner: Partner, allowed_types: list[str]) -> None:
    PartnerRegistry(services.unit).add(
        "sichuan",
        name="四川全民健康信息平台",
        region="sichuan",
        audience="sichuan",
        jwks=str(partner.jwks_path),
        endpoint="http://sichuan.test/exchange/v1/bundles",
        allowed_types=allowed_types,
    )


def partner_headers(services: Services, client_id: str = "sichuan") -> dict[str, str]:
    return bearer(services.settings, PARTNER_SCOPES, subject=client_id, client_id=client_id)


def message(number: str, *, value: float = 5.8, obs_id: str = "glu-1") -> bytes:
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {
                "fullUrl": "https://sc.example/fhir/Patient/sc-p1",
                "resource": {
                    "resourceType": "Patient",
                    "id": "sc-p1",
                    "identifier": [
                        id_identifier(number),
                        {"system": "urn:sichuan:record-number", "value": "SC0001"},
                    ],
                    "name": [{"family": "李", "given": ["娜"]}],
                    "gender": "female",
                    "birthDate": "1990-03-07",
                },
            },
            {
                "fullUrl": f"https://sc.example/fhir/Observation/{obs_id}",
                "resource": {
                    "resourceType": "Observation",
                    "id": obs_id,
                    "status": "final",
                    "category": [LAB],
                    "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
                    "subject": {"reference": "Patient/sc-p1"},
                    "performer": [{"reference": "Organization/west-china-hospital"}],
                    "effectiveDateTime": "2026-11-20T08:00:00+08:00",
                    "valueQuantity": {"value": value, "unit": "mmol/L"},
                },
            },
        ],
    }
    return orjson.dumps(bundle)


def post(
    client: TestClient, services: Services, body: bytes, signature: str | None, **kw: Any
) -> Any:
    headers = {**FHIR_JSON, **partner_headers(services, kw.pop("client_id", "sichuan"))}
    if signature is not None:
        headers[envelope.HEADER] = signature
    return client.post("/exchange/v1/bundles", content=body, headers=headers)


def female_number() -> str:
    return make_id_number("510104", "19900307", "124")  # Chengdu, even: female


def counts(services: Services) -> dict[str, int]:
    with services.unit.read() as conn:
        return {
            "messages": conn.execute(
                sa.select(sa.func.count()).select_from(exchange_message)
            ).scalar_one(),
            "resources": conn.execute(
                sa.select(sa.func.count()).select_from(resource)
            ).scalar_one(),
        }


def test_signed_bundle_is_verified_matched_stored_with_provenance_and_receipt(
    region: tuple[TestClient, Services, Partner],
) -> None:
    client, services, partner = region
    number = female_number()
    local = client.post(
        "/fhir/Patient",
        json={
            "resourceType": "Patient",
            "identifier": [id_identifier(number)],
            "gender": "female",
            "birthDate": "1990-03-07",
        },
        headers=FHIR_JSON,
    ).json()
    body = message(number)
    response = post(client, services, body, partner.sign(body))
    assert response.status_code == 200, response.text
    receipt = response.json()
    assert receipt["type"] == "transaction-response"
    # the receipt is signed by Chongqing, to Sichuan, for the same URL
    jwks = client.get("/.well-known/jwks.json").json()
    keys = {k["kid"]: ECKey.import_key(k) for k in jwks["keys"]}
    header = envelope.verify(
        response.content,
        response.headers[envelope.HEADER],
        key_for=lambda iss, kid: keys.get(kid) if iss == "chongqing" else None,
        audience="sichuan",
        htm="POST",
        htu=HTU,
    )
    assert header.iss == "chongqing"
    # the Patient was matched by ID number: no second record
    patient_entry, obs_entry = receipt["entry"]
    assert patient_entry["response"]["location"] == f"Patient/{local['id']}"
    found = client.get(
        "/fhir/Patient", params={"identifier": f"{id_identifier(number)['system']}|{number}"}
    )
    assert found.json()["total"] == 1
    obs_location = obs_entry["response"]["location"]
    assert obs_entry["response"]["status"].startswith("201")
    stored = client.get(f"/fhir/{obs_location.split('/_history')[0]}").json()
    assert stored["subject"]["reference"] == f"Patient/{local['id']}"
    assert stored["meta"]["source"] == "urn:ehr-service:exchange:sichuan"
    # a reference to what the message did not carry names the partner's resource
    assert stored["performer"][0] == {
        "type": "Organization",
        "identifier": {
            "system": "urn:ehr-service:exchange:sichuan",
            "value": "Organization/west-china-hospital",
        },
    }
    provenance = client.get(
        "/fhir/Provenance", params={"target": obs_location.split("/_history")[0]}
    ).json()
    assert provenance["total"] == 1
    prov = provenance["entry"][0]["resource"]
    assert prov["target"][0]["reference"] == obs_location
    assert prov["agent"][0]["who"]["identifier"]["value"] == "sichuan"
    assert prov["entity"][0]["what"]["identifier"]["value"].startswith("sichuan/")
    signature_data = prov["signature"][0]["data"]
    import base64

    assert base64.b64decode(signature_data).decode().count(".") == 2
    # the Provenance is in the resident's record
    everything = client.get(f"/fhir/Patient/{local['id']}/$everything").json()
    types = {e["resource"]["resourceType"] for e in everything["entry"]}
    assert {"Observation", "Provenance"} <= types
    # the exact bytes are stored sealed: the ID number appears nowhere in plaintext
    with services.unit.read() as conn:
        row = conn.execute(sa.select(exchange_message)).one()
    assert number.encode() not in bytes(row.body)
    assert row.direction == "in" and row.status == 200
    exchange = Exchange(services)
    assert exchange.archive.body_of(dict(row._mapping)) == body
    # received results are not queued back to the partner that sent them
    with services.unit.read() as conn:
        assert conn.execute(sa.select(exchange_outbox)).all() == []
    # the receipt is in the audit, as an import naming the resident
    with services.unit.read() as conn:
        event = conn.execute(
            sa.select(audit_event)
            .where(audit_event.c.kind == "exchange-receive")
            .order_by(audit_event.c.seq.desc())
        ).first()
    assert event is not None
    content = orjson.loads(event.content)
    assert content["type"]["code"] == "110107"
    assert {"reference": f"Patient/{local['id']}"} in [e["what"] for e in content["entity"]]


def test_unknown_resident_gets_one_record_across_messages(
    region: tuple[TestClient, Services, Partner],
) -> None:
    client, services, partner = region
    number = female_number()
    for obs_id in ("glu-1", "glu-2"):
        body = message(number, obs_id=obs_id)
        response = post(client, services, body, partner.sign(body))
        assert response.status_code == 200, response.text
    patients = client.get("/fhir/Patient").json()
    assert patients["total"] == 1
    patient = patients["entry"][0]["resource"]
    systems = {i["system"] for i in patient["identifier"]}
    assert "urn:sichuan:record-number" in systems  # the cross-reference kept (PIXm)
    assert services.identity.record_system in systems  # and a record number of ours
    assert client.get("/fhir/Observation").json()["total"] == 2
    # the same source result sent again in a new message: a new version, not a copy
    body = message(number, obs_id="glu-1", value=6.1)
    response = post(client, services, body, partner.sign(body))
    assert response.status_code == 200
    assert response.json()["entry"][1]["response"]["status"].startswith("200")
    assert client.get("/fhir/Observation").json()["total"] == 2


def test_retry_returns_the_first_outcome_and_a_reused_jti_is_refused(
    region: tuple[TestClient, Services, Partner],
) -> None:
    client, services, partner = region
    body = message(female_number())
    signature = partner.sign(body)
    first = post(client, services, body, signature)
    assert first.status_code == 200
    before = counts(services)
    again = post(client, services, body, signature)
    assert again.status_code == 200
    assert again.content == first.content  # the first outcome, byte for byte
    assert envelope.HEADER in again.headers
    assert counts(services) == before  # nothing stored twice
    jti = envelope.protected_header(signature)["jti"]
    other = message(female_number(), value=9.9)
    replay = post(client, services, other, partner.sign(other, jti=jti))
    assert replay.status_code == 409
    assert "replay" in replay.json()["issue"][0]["diagnostics"]
    assert counts(services) == before


def _tamper(body: bytes) -> bytes:
    return body.replace(b"5.8", b"5.9")


REFUSALS: dict[str, tuple[int, Callable[[Partner, bytes], tuple[bytes, str | None]]]] = {
    "tampered byte": (403, lambda p, b: (_tamper(b), p.sign(b))),
    "wrong audience": (403, lambda p, b: (b, p.sign(b, aud="beijing"))),
    "wrong htu": (403, lambda p, b: (b, p.sign(b, htu="http://elsewhere/exchange/v1/bundles"))),
    "wrong method": (403, lambda p, b: (b, p.sign(b, htm="PUT"))),
    "expired": (403, lambda p, b: (b, p.sign(b, now=time.time() - 900))),
    "far future": (403, lambda p, b: (b, p.sign(b, now=time.time() + 900))),
    "unknown key": (
        403,
        lambda p, b: (b, p.sign(b, key=ECKey.generate_key("P-256", private=True))),
    ),
    "unknown partner": (403, lambda p, b: (b, p.sign(b, iss="beijing"))),
    "no signature": (400, lambda p, b: (b, None)),
    "attached payload": (400, lambda p, b: (b, p.sign(b).replace("..", ".eA.", 1))),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refused_messages_store_nothing(
    region: tuple[TestClient, Services, Partner], case: str
) -> None:
    client, services, partner = region
    status, make = REFUSALS[case]
    body, signature = make(partner, message(female_number()))
    before = snapshot(services), counts(services)
    response = post(client, services, body, signature)
    assert response.status_code == status, response.text
    assert response.json()["resourceType"] == "OperationOutcome"
    assert (snapshot(services), counts(services)) == before


def test_refusals_after_verification_store_nothing(
    region: tuple[TestClient, Services, Partner],
) -> None:
    client, services, partner = region
    number = female_number()
    body = message(number)
    before = snapshot(services), counts(services)
    # a token of another client, even with a valid signature
    response = post(client, services, body, partner.sign(body), client_id="someone-else")
    assert response.status_code == 403
    # a type the partner may not send
    bundle = orjson.loads(body)
    bundle["entry"].append(
        {
            "resource": {
                "resourceType": "Condition",
                "id": "c1",
                "subject": {"reference": "Patient/sc-p1"},
            }
        }
    )
    wrong_type = orjson.dumps(bundle)
    response = post(client, services, wrong_type, partner.sign(wrong_type))
    assert response.status_code == 403 and "may not send" in response.text
    # a result whose Patient is not carried
    bundle = orjson.loads(body)
    bundle["entry"][1]["resource"]["subject"]["reference"] = "Patient/elsewhere"
    orphan = orjson.dumps(bundle)
    response = post(client, services, orphan, partner.sign(orphan))
    assert response.status_code == 422
    # an invalid resource inside: the whole message is refused
    bundle = orjson.loads(body)
    bundle["entry"][1]["resource"]["valueQuantity"]["value"] = "much"
    invalid = orjson.dumps(bundle)
    response = post(client, services, invalid, partner.sign(invalid))
    assert response.status_code in {400, 422}, response.text
    assert (snapshot(services), counts(services)) == before
    # a resident who refused sharing with the Sichuan region
    local = client.post(
        "/fhir/Patient",
        json={"resourceType": "Patient", "identifier": [id_identifier(number)]},
        headers=FHIR_JSON,
    ).json()
    consent = refusal(local["id"], region="sichuan")
    assert client.post("/fhir/Consent", json=consent, headers=FHIR_JSON).status_code == 201
    before = snapshot(services), counts(services)
    response = post(client, services, body, partner.sign(body))
    assert response.status_code == 403, response.text
    assert (snapshot(services), counts(services)) == before


def test_partner_key_states(region: tuple[TestClient, Services, Partner]) -> None:
    client, services, partner = region
    registry = PartnerRegistry(services.unit)
    body = message(female_number())
    # rotation: the partner publishes a new key and retires the old one
    new_key = ECKey.generate_key("P-256", private=True)
    partner.publish(partner.key, new_key, statuses={partner.kid: "retired"})
    registry.update("sichuan", jwks=str(partner.jwks_path))
    assert post(client, services, body, partner.sign(body)).status_code == 403  # retired
    assert post(client, services, body, partner.sign(body, key=new_key)).status_code == 200
    # a revoked key refuses even old-style verification
    registry.set_key_state("sichuan", new_key.thumbprint(), "revoked")
    other = message(female_number(), obs_id="x2")
    assert post(client, services, other, partner.sign(other, key=new_key)).status_code == 403
    # a key that vanishes from the partner's JWKS counts as revoked
    third = ECKey.generate_key("P-256", private=True)
    partner.publish(third)
    updated = registry.update("sichuan", jwks=str(partner.jwks_path))
    assert updated.keys[partner.kid]["status"] == "revoked"
    assert updated.keys[new_key.thumbprint()]["status"] == "revoked"


def final_lab(patient_id: str, status: str = "final") -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": status,
        "category": [LAB],
        "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "valueQuantity": {"value": 6.1, "unit": "%"},
    }


def test_outbox_rows_commit_with_final_results_of_sharing_residents(
    region: tuple[TestClient, Services, Partner],
) -> None:
    client, services, _partner = region
    number = make_id_number("500101", "19800101", "131")
    pid = client.post(
        "/fhir/Patient",
        json={"resourceType": "Patient", "identifier": [id_identifier(number)]},
        headers=FHIR_JSON,
    ).json()["id"]
    final = client.post("/fhir/Observation", json=final_lab(pid), headers=FHIR_JSON).json()
    client.post("/fhir/Observation", json=final_lab(pid, "preliminary"), headers=FHIR_JSON)
    vital = final_lab(pid) | {
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "vital-signs",
                    }
                ]
            }
        ]
    }
    client.post("/fhir/Observation", json=vital, headers=FHIR_JSON)
    # a failed transaction leaves no outbox row behind
    bad = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"request": {"method": "POST", "url": "Observation"}, "resource": final_lab(pid)},
            {
                "request": {"method": "POST", "url": "Observation"},
                "resource": final_lab(pid) | {"valueQuantity": {"value": "x"}},
            },
        ],
    }
    assert client.post("/fhir", json=bad, headers=FHIR_JSON).status_code == 400
    with services.unit.read() as conn:
        rows = conn.execute(sa.select(exchange_outbox)).all()
    assert [(r.partner_id, r.res_id, r.version_id, r.state) for r in rows] == [
        ("sichuan", final["id"], 1, "pending")
    ]
    # an amendment queues its new version
    amended = final | {"status": "amended"}
    assert (
        client.put(f"/fhir/Observation/{final['id']}", json=amended, headers=FHIR_JSON).status_code
        == 200
    )
    # a resident who refuses the region: nothing of theirs is queued
    other = client.post(
        "/fhir/Patient", json={"resourceType": "Patient"}, headers=FHIR_JSON
    ).json()["id"]
    refused = refusal(other, region="sichuan")
    assert client.post("/fhir/Consent", json=refused, headers=FHIR_JSON).status_code == 201
    client.post("/fhir/Observation", json=final_lab(other), headers=FHIR_JSON)
    with services.unit.read() as conn:
        rows = conn.execute(sa.select(exchange_outbox).order_by(exchange_outbox.c.seq)).all()
    assert [(r.res_id, r.version_id, r.patient_id) for r in rows] == [
        (final["id"], 1, pid),
        (final["id"], 2, pid),
    ]


def test_feed_is_signed_and_paged_for_the_calling_partner(
    region: tuple[TestClient, Services, Partner],
) -> None:
    client, services, _partner = region
    number = make_id_number("500101", "19800101", "131")
    pid = client.post(
        "/fhir/Patient",
        json={"resourceType": "Patient", "identifier": [id_identifier(number)]},
        headers=FHIR_JSON,
    ).json()["id"]
    ids = [
        client.post("/fhir/Observation", json=final_lab(pid), headers=FHIR_JSON).json()["id"]
        for _ in range(3)
    ]
    # the feed holds back what is younger than the settle time (5 s by default)
    headers = partner_headers(services)
    early = client.get("/exchange/v1/feed", params={"_count": 2}, headers=headers)
    assert early.status_code == 200 and "entry" not in early.json()
    with services.unit.write() as conn:
        rows = conn.execute(sa.select(exchange_outbox.c.seq, exchange_outbox.c.created)).all()
        for row in rows:
            conn.execute(
                sa.update(exchange_outbox)
                .where(exchange_outbox.c.seq == row.seq)
                .values(created=row.created - timedelta(minutes=1))
            )
    # On PostgreSQL the feed also waits for every older transaction of the cluster
    # (another test worker's) to end: poll.
    page = _settled(lambda: client.get("/exchange/v1/feed", params={"_count": 2}, headers=headers))
    assert page.status_code == 200
    jwks = client.get("/.well-known/jwks.json").json()
    keys = {k["kid"]: ECKey.import_key(k) for k in jwks["keys"]}
    envelope.verify(
        page.content,
        page.headers[envelope.HEADER],
        key_for=lambda iss, kid: keys.get(kid),
        audience="sichuan",
        htm="GET",
        htu="http://testserver/exchange/v1/feed?_count=2",
    )
    document = page.json()
    results = [
        e["resource"] for e in document["entry"] if e["resource"]["resourceType"] == "Observation"
    ]
    assert [r["id"] for r in results] == ids[:2]
    patient = next(
        e["resource"] for e in document["entry"] if e["resource"]["resourceType"] == "Patient"
    )
    assert id_identifier(number) in patient["identifier"]  # the partner matches on it
    next_url = next(link["url"] for link in document["link"] if link["relation"] == "next")
    rest = client.get(next_url.replace("http://testserver", ""), headers=headers).json()
    assert [
        e["resource"]["id"] for e in rest["entry"] if e["resource"]["resourceType"] == "Observation"
    ] == ids[2:]
    # staff and other systems are not partners
    assert client.get("/exchange/v1/feed").status_code == 403
    assert (
        client.get("/exchange/v1/feed", headers=partner_headers(services, "nobody")).status_code
        == 403
    )


def test_stored_messages_verify_again_after_rotation_and_tampering_is_found(
    region: tuple[TestClient, Services, Partner],
) -> None:
    client, services, partner = region
    bodies = [message(female_number(), obs_id=f"o{i}") for i in range(2)]
    for body in bodies:
        assert post(client, services, body, partner.sign(body)).status_code == 200
    exchange = Exchange(services)
    assert [v.ok for v in exchange.archive.verify_all()] == [True, True]
    # the partner rotates: the old key retires but still verifies old messages
    new_key = ECKey.generate_key("P-256", private=True)
    partner.publish(partner.key, new_key, statuses={partner.kid: "retired"})
    PartnerRegistry(services.unit).update("sichuan", jwks=str(partner.jwks_path))
    assert [v.ok for v in Exchange(services).archive.verify_all()] == [True, True]
    # one stored byte changed: the digest check names it
    with services.unit.write() as conn:
        first = conn.execute(sa.select(exchange_message).order_by(exchange_message.c.jti)).first()
        assert first is not None
        raw = bytearray(first.body)
        raw[-1] ^= 1
        conn.execute(
            sa.update(exchange_message)
            .where(exchange_message.c.jti == first.jti)
            .values(body=bytes(raw))
        )
    verdicts = Exchange(services).archive.verify_all()
    assert sorted(v.ok for v in verdicts) == [False, True]
    bad = next(v for v in verdicts if not v.ok)
    assert bad.jti == first.jti and "cannot be opened" in bad.reason
    assert isinstance(uuid.UUID(bad.jti), uuid.UUID)
    assert KeySet.import_key_set(client.get("/.well-known/jwks.json").json())


def test_concurrent_deliveries_of_one_message_ingest_it_once(
    region: tuple[TestClient, Services, Partner],
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    client, services, partner = region
    body = message(female_number())
    signature = partner.sign(body)
    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(lambda _: post(client, services, body, signature), range(8)))
    assert [r.status_code for r in responses] == [200] * 8, [r.text for r in responses]
    assert len({r.content for r in responses}) == 1  # every retry got the first answer
    assert counts(services)["messages"] == 1
    assert client.get("/fhir/Observation").json()["total"] == 1
    assert client.get("/fhir/Patient").json()["total"] == 1


def _outbox_row(patient_id: str) -> dict[str, Any]:
    """A pending outbox row for the partner, due five minutes ago (past settling)."""
    from ehr_service.fhir.primitives import utc_now

    old = utc_now() - timedelta(minutes=5)
    return {
        "partner_id": "sichuan", "res_type": "Observation", "version_id": 1,
        "patient_id": patient_id, "created": old, "state": "pending", "attempts": 0,
        "next_attempt": old,
    }  # fmt: skip


def test_the_feed_never_passes_a_transaction_still_open(
    region: tuple[TestClient, Services, Partner], database_url: str
) -> None:
    client, services, _partner = region
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer at a time: commits come in seq order")
    from ehr_service.fhir.primitives import utc_now
    from ehr_service.storage import exchange as exchange_store

    pid = client.post("/fhir/Patient", json={"resourceType": "Patient"}, headers=FHIR_JSON).json()[
        "id"
    ]
    row = _outbox_row(pid) | {"res_id": "slow"}
    slow = services.database.engine.connect()
    transaction = slow.begin()
    exchange_store.enqueue(slow, [row])  # an open transaction holds the smaller seq
    try:
        with services.unit.write() as conn:
            exchange_store.enqueue(conn, [row | {"res_id": "fast"}])
        headers = partner_headers(services)
        page = client.get("/exchange/v1/feed", headers=headers).json()
        cursor = next(link["url"] for link in page["link"] if link["relation"] == "next")
        assert "_cursor=0" in cursor  # nothing passed while the slower one is open
    finally:
        transaction.commit()
        slow.close()

    def both() -> list[Any]:
        with services.unit.read() as conn:
            return exchange_store.feed_rows(
                conn, "sichuan", after=0, since=None, before=utc_now(), limit=10
            )

    rows = _settled(both, ready=lambda found: len(found) == 2)
    assert [r["res_id"] for r in rows] == ["slow", "fast"]


def test_the_feed_never_passes_an_older_transaction_that_took_its_seq_later(
    region: tuple[TestClient, Services, Partner], database_url: str
) -> None:
    """An older transaction (smaller id) takes its seq after a younger one, commits
    first, and the younger one is still open: a cursor over seq alone would pass the
    younger's row for good."""
    client, services, _partner = region
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer at a time: commits come in seq order")
    from ehr_service.fhir.primitives import utc_now
    from ehr_service.storage import exchange as exchange_store

    pid = client.post("/fhir/Patient", json={"resourceType": "Patient"}, headers=FHIR_JSON).json()[
        "id"
    ]
    row = _outbox_row(pid)
    older = services.database.engine.connect()
    older_tx = older.begin()
    older.execute(sa.text("SELECT pg_current_xact_id()"))  # its id, before the other's
    younger = services.database.engine.connect()
    younger_tx = younger.begin()
    try:
        exchange_store.enqueue(younger, [row | {"res_id": "younger"}])  # the smaller seq
        exchange_store.enqueue(older, [row | {"res_id": "older"}])
        older_tx.commit()

        def read(after: int) -> list[Any]:
            with services.unit.read() as conn:
                return exchange_store.feed_rows(
                    conn, "sichuan", after=after, since=None, before=utc_now(), limit=10
                )

        first = _settled(lambda: read(0), ready=lambda found: len(found) == 1)
        assert [r["res_id"] for r in first] == ["older"]
        cursor = int(first[0]["seq"])
        assert read(cursor) == []  # the younger one is still open
        younger_tx.commit()
        rest = _settled(lambda: read(cursor), ready=lambda found: len(found) == 1)
        assert [r["res_id"] for r in rest] == ["younger"]  # not passed by the cursor
        assert int(rest[0]["seq"]) < cursor
    finally:
        for conn in (older, younger):
            conn.close()


def _settled(fetch: Callable[[], Any], ready: Callable[[Any], bool] | None = None) -> Any:
    """Ask again until the answer holds entries (at most 30 s)."""
    deadline = time.monotonic() + 30
    while True:
        answer = fetch()
        done = ready(answer) if ready else "entry" in answer.json()
        if done or time.monotonic() > deadline:
            return answer
        time.sleep(0.2)


def test_feed_parameters(region: tuple[TestClient, Services, Partner]) -> None:
    client, services, _partner = region
    headers = partner_headers(services)
    assert (
        client.get("/exchange/v1/feed", params={"_cursor": 2**64}, headers=headers).status_code
        == 400
    )
    page = client.get(
        "/exchange/v1/feed", params={"_since": "2026-01-01T00:00:00+08:00"}, headers=headers
    )
    assert page.status_code == 200, page.text
    following = next(link["url"] for link in page.json()["link"] if link["relation"] == "next")
    assert (
        client.get(following.replace("http://testserver", ""), headers=headers).status_code == 200
    )
