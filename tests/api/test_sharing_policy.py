"""EHR_SHARING_POLICY: under consent-required only residents holding an active permit
Consent for the other region are queued, served in the feed, answered to that
region's callers or taken in from it; every disclosure records its lawful basis,
which the citizen's access log shows; the citizen grants and withdraws the permit.
Both backends (the two-region version is tests/api/test_sharing_regions.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from fastapi.testclient import TestClient
from joserfc.jwk import ECKey

from ehr_service.app import create_app
from ehr_service.exchange.partners import PartnerRegistry
from ehr_service.interactions.context import Services
from ehr_service.storage.tables import exchange_outbox
from tests.helpers import (
    FHIR_JSON,
    audit_get,
    bearer,
    id_identifier,
    lab,
    make_id_number,
    organization,
    snapshot,
)

SEPARATE = "pipl-separate-consent"
OTHER = "pipl-other-basis"


def _partner(services: Services, tmp_path: Path) -> None:
    key = ECKey.generate_key("P-256", private=True, auto_kid=True)
    jwks = tmp_path / "sichuan-jwks.json"
    jwks.write_bytes(orjson.dumps({"keys": [key.as_dict(private=False)]}))
    PartnerRegistry(services.unit).add(
        "sichuan", name="Sichuan", region="sichuan", audience="sichuan", jwks=str(jwks),
        endpoint="http://sichuan.test/exchange/v1/bundles",
        allowed_types=["Observation", "DiagnosticReport", "ImagingStudy", "Organization"],
    )  # fmt: skip


def _resident(client: TestClient, sequence: str) -> str:
    number = make_id_number("500103", "19750601", sequence)
    body = {"resourceType": "Patient", "gender": "male", "birthDate": "1975-06-01",
            "identifier": [id_identifier(number)]}  # fmt: skip
    created = client.post("/fhir/Patient", json=body, headers=FHIR_JSON)
    assert created.status_code == 201, created.text
    pid: str = created.json()["id"]
    return pid


def _citizen(services: Services, pid: str) -> TestClient:
    headers = bearer(services.settings, "patient/*.cruds", patient=pid)
    return TestClient(create_app(services=services), raise_server_exceptions=False,
                      headers=headers)  # fmt: skip


def _queued(services: Services) -> list[str]:
    with services.unit.read() as conn:
        rows = conn.execute(sa.select(exchange_outbox.c.patient_id)).all()
    return sorted(r.patient_id for r in rows)


def _setup(make_client: Callable[..., TestClient], tmp_path: Path, policy: str) -> Any:
    client = make_client(sharing_policy=policy)
    services: Services = client.app.state.services  # type: ignore[attr-defined]
    _partner(services, tmp_path)
    put = client.put("/fhir/Organization/h1", json=organization("h1"), headers=FHIR_JSON)
    assert put.status_code == 201
    consenting, other = _resident(client, "135"), _resident(client, "157")
    with _citizen(services, consenting) as me:
        granted = me.post("/citizen/v1/me/sharing-permits", json={"region": "sichuan"})
        assert granted.status_code == 201, granted.text
        assert granted.json()["regions"] == ["sichuan"]
        assert (
            me.post("/citizen/v1/me/sharing-permits", json={"region": "sichuan"}).json()["id"]
            == granted.json()["id"]
        )  # granted already: the same permit
    return client, services, consenting, other


def _basis(event: dict[str, Any]) -> str | None:
    for concept in event.get("purposeOfUse", []):
        for coding in concept["coding"]:
            if coding["system"] == "urn:ehr-service:legal-basis":
                return str(coding["code"])
    return None


def test_consent_required_shares_only_consenting_residents(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    client, services, consenting, other = _setup(make_client, tmp_path, "consent-required")
    for pid in (consenting, other):
        made = client.post("/fhir/Observation", json=lab(pid, "2345-7", "2026-03-01", "h1"),
                           headers=FHIR_JSON)  # fmt: skip
        assert made.status_code == 201
    assert _queued(services) == [consenting]  # the outbox
    # the other region's staff: the consenting resident's record only
    from_sichuan = bearer(services.settings, "user/*.rs", region="sichuan")
    with TestClient(create_app(services=services), raise_server_exceptions=False,
                    headers=from_sichuan) as doctor:  # fmt: skip
        assert doctor.get(f"/fhir/Patient/{consenting}").status_code == 200
        refused = doctor.get(f"/fhir/Patient/{other}")
        assert refused.status_code == 403
        assert "consented" in refused.json()["issue"][0]["diagnostics"]
        found = doctor.get("/fhir/Observation").json()
        owners = {e["resource"]["subject"]["reference"] for e in found.get("entry", [])}
        assert owners == {f"Patient/{consenting}"}
        assert doctor.get(f"/fhir/Patient/{consenting}/$everything").status_code == 200
        assert doctor.get(f"/fhir/Patient/{other}/$everything").status_code == 403
    # this region's own staff see both, as before
    assert client.get(f"/fhir/Patient/{other}").status_code == 200
    # each access of the other region records its lawful basis, shown to the resident
    events = audit_get(client, f"/fhir/AuditEvent?patient={consenting}&subtype=read").json()
    bases = {_basis(e["resource"]) for e in events["entry"]}
    assert SEPARATE in bases
    with _citizen(services, consenting) as me:
        log = me.get("/citizen/v1/me/access-log").json()["items"]
        assert any((i["legalBasis"] or {}).get("code") == SEPARATE for i in log)
        assert any(i["legalBasis"] is None for i in log)  # this region's own accesses
        # withdrawn: nothing more is queued, and the region's callers are refused
        withdrawn = me.delete("/citizen/v1/me/sharing-permits/sichuan")
        assert withdrawn.status_code == 200 and withdrawn.json()["status"] == "inactive"
        assert me.get("/citizen/v1/me/sharing-permits").json()["items"] == []
        assert me.delete("/citizen/v1/me/sharing-permits/sichuan").status_code == 404
    client.post("/fhir/Observation", json=lab(consenting, "2345-7", "2026-03-02", "h1"),
                headers=FHIR_JSON)  # fmt: skip
    assert _queued(services) == [consenting]  # only the first, queued while permitted
    with TestClient(create_app(services=services), raise_server_exceptions=False,
                    headers=from_sichuan) as doctor:  # fmt: skip
        assert doctor.get(f"/fhir/Patient/{consenting}").status_code == 403
    exchange = client.app.state.exchange  # type: ignore[attr-defined]
    with services.unit.read() as conn:
        rows = [dict(r._mapping) for r in conn.execute(sa.select(exchange_outbox)).all()]
    keep, gone = exchange.outbound.shareable("sichuan", rows)
    assert keep == [] and len(gone) == 1  # withdrawn before it was sent


def test_opt_out_shares_everyone_on_another_basis(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    client, services, consenting, other = _setup(make_client, tmp_path, "opt-out")
    for pid in (consenting, other):
        client.post("/fhir/Observation", json=lab(pid, "2345-7", "2026-03-01", "h1"),
                    headers=FHIR_JSON)  # fmt: skip
    assert _queued(services) == sorted([consenting, other])
    from_sichuan = bearer(services.settings, "user/*.rs", region="sichuan")
    with TestClient(create_app(services=services), raise_server_exceptions=False,
                    headers=from_sichuan) as doctor:  # fmt: skip
        assert doctor.get(f"/fhir/Patient/{other}").status_code == 200
    events = audit_get(client, f"/fhir/AuditEvent?patient={other}&subtype=read").json()
    assert {_basis(e["resource"]) for e in events["entry"]} == {OTHER}


def test_bad_permit_requests_change_nothing(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    client, services, consenting, _ = _setup(make_client, tmp_path, "consent-required")
    before = snapshot(services)
    with _citizen(services, consenting) as me:
        for body in ({"region": "chongqing"}, {"region": "a b"}, {"region": 7}, {},
                     {"region": "sichuan", "also": 1}, [], {"region": "x" * 65}):  # fmt: skip
            answer = me.post("/citizen/v1/me/sharing-permits", json=body)
            assert answer.status_code == 400, (body, answer.text)
            assert answer.json()["resourceType"] == "OperationOutcome"
        broken = me.post("/citizen/v1/me/sharing-permits", content=b"{",
                         headers={"Content-Type": "application/json"})  # fmt: skip
        assert broken.status_code == 400
        assert me.delete("/citizen/v1/me/sharing-permits/mars").status_code == 404
        assert me.delete("/citizen/v1/me/sharing-permits/a%20b").status_code in {400, 404, 422}
    assert snapshot(services) == before
    staff = client.post("/citizen/v1/me/sharing-permits", json={"region": "sichuan"})
    assert staff.status_code == 403  # not a patient-bound token


def test_the_permit_is_a_fhir_consent_with_its_legal_basis(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    client, _services, consenting, _ = _setup(make_client, tmp_path, "consent-required")
    consents = client.get("/fhir/Consent", params={"patient": consenting}).json()
    (consent,) = [e["resource"] for e in consents["entry"]]
    assert consent["provision"]["type"] == "permit"
    assert consent["policyRule"]["coding"][0]["code"] == SEPARATE
    actor = consent["provision"]["actor"][0]["reference"]["identifier"]
    assert actor == {"system": "urn:ehr-service:region", "value": "sichuan"}
