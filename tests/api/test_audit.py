"""Every access is an AuditEvent on a hash chain; tampering is named."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from ehr_service.app import build_services, create_app
from ehr_service.audit.chain import verify
from ehr_service.cli import app as cli
from ehr_service.config import Settings
from ehr_service.interactions.context import Services
from ehr_service.storage.migrate import upgrade
from ehr_service.storage.tables import audit_event, audit_head
from tests.helpers import FHIR_JSON, bearer, make_id_number, observation, patient, snapshot, tamper


def _events(services: Services, subject: str) -> list[dict[str, Any]]:
    with services.unit.read() as conn:
        rows = conn.execute(
            sa.select(audit_event.c.content)
            .where(audit_event.c.subject == subject)
            .order_by(audit_event.c.seq)
        ).all()
    return [orjson.loads(bytes(r[0])) for r in rows]


def _client(
    services: Services, subject: str, scopes: str = "user/*.cruds", **claims: Any
) -> TestClient:
    return TestClient(
        create_app(services=services),
        raise_server_exceptions=False,
        headers=bearer(services.settings, scopes, subject=subject, **claims),
    )


def test_reads_searches_writes_and_refusals_are_audited(services: Services) -> None:
    number = make_id_number(born="19810101", sequence="811")
    with _client(services, "dr-li", organization="Organization/cq-first") as staff:
        created = staff.post(
            "/fhir/Patient",
            json=patient(identifier=[{"system": "urn:oid:2.16.156.10011.1.3", "value": number}]),
            headers=FHIR_JSON,
        ).json()
        pid = created["id"]
        staff.get(f"/fhir/Patient/{pid}")
        staff.get(f"/fhir/Patient?identifier=urn:oid:2.16.156.10011.1.3|{number}")
        staff.post("/fhir/Observation", json=observation(f"Patient/{pid}"), headers=FHIR_JSON)
        staff.get("/fhir/Patient/does-not-exist")
    events = _events(services, "dr-li")
    kinds = [(e["subtype"][0]["code"], e["action"], e["outcome"]) for e in events]
    assert kinds == [
        ("create", "C", "0"),
        ("read", "R", "0"),
        ("search-type", "E", "0"),
        ("create", "C", "0"),
        ("read", "R", "4"),
    ]
    for event in events[:4]:
        assert {"reference": f"Patient/{pid}"} in [e.get("what") for e in event["entity"]]
    assert events[0]["agent"][1]["who"] == {"reference": "Organization/cq-first"}
    query = next(e["query"] for e in events[2]["entity"] if "query" in e)
    assert number not in base64.b64decode(query).decode()
    text = str(events)
    assert "王" not in text and number not in text  # never result content or ID numbers


def test_a_failed_write_leaves_only_its_audit_event(services: Services) -> None:
    with _client(services, "reader", "user/Patient.rs") as reader:
        before = snapshot(services)
        refused = reader.post("/fhir/Patient", json=patient(), headers=FHIR_JSON)
        assert refused.status_code == 403
        assert snapshot(services) == before
    [event] = _events(services, "reader")
    assert event["outcome"] == "4" and event["action"] == "C"


def test_login_failures_are_audited(services: Services) -> None:
    with TestClient(create_app(services=services), raise_server_exceptions=False) as anonymous:
        response = anonymous.get(
            "/fhir/Patient", headers={"Authorization": "Bearer forged.token.x"}
        )
        assert response.status_code == 401
    with services.unit.read() as conn:
        kinds = [r[0] for r in conn.execute(sa.select(audit_event.c.kind))]
    assert "login" in kinds


@pytest.fixture
def chain(tmp_path: Path) -> Services:
    """Its own SQLite database: these tests break the chain on purpose."""
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'audit.sqlite3'}",
        data_dir=tmp_path / "data",
        environment="test",
    )
    services = build_services(settings)
    upgrade(services.database, settings.migrations_dir)
    with _client(services, "clerk") as client:
        for _ in range(5):
            client.get("/fhir/Patient")
    return services


def _cli_verify(services: Services, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("EHR_DATABASE_URL", services.settings.effective_database_url)
    monkeypatch.setenv("EHR_DATA_DIR", str(services.settings.data_dir))
    return CliRunner().invoke(cli, ["audit", "verify"])


def test_verify_names_the_altered_event(chain: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    intact = _cli_verify(chain, monkeypatch)
    assert intact.exit_code == 0 and "intact: 5 events" in intact.output
    with tamper(chain) as conn:
        row = conn.execute(sa.select(audit_event.c.content).where(audit_event.c.seq == 3)).one()
        forged = bytes(row[0]).replace(b'"outcome":"0"', b'"outcome":"4"')
        conn.execute(sa.update(audit_event).where(audit_event.c.seq == 3).values(content=forged))
    result = _cli_verify(chain, monkeypatch)
    assert result.exit_code == 1 and "event 3" in result.output and "altered" in result.output


def test_verify_names_a_removed_event(chain: Services) -> None:
    with tamper(chain) as conn:
        conn.execute(sa.delete(audit_event).where(audit_event.c.seq == 2))
    verdict = verify(chain.unit)
    assert verdict.first_bad == 2 and "missing" in verdict.reason


def test_verify_names_reordered_events(chain: Services) -> None:
    with tamper(chain) as conn:
        rows = {
            r.seq: r
            for r in conn.execute(sa.select(audit_event).where(audit_event.c.seq.in_([2, 3])))
        }
        for seq, other in ((2, 3), (3, 2)):
            source = rows[other]
            conn.execute(
                sa.update(audit_event)
                .where(audit_event.c.seq == seq)
                .values(content=source.content, hash=source.hash, prev_hash=source.prev_hash)
            )
    verdict = verify(chain.unit)
    assert verdict.first_bad == 2


def test_verify_notices_a_cut_tail(chain: Services) -> None:
    with tamper(chain) as conn:
        conn.execute(sa.delete(audit_event).where(audit_event.c.seq == 5))
    verdict = verify(chain.unit)
    assert verdict.first_bad == 5 and "head" in verdict.reason
    with tamper(chain) as conn:  # even with the head moved back too
        conn.execute(sa.update(audit_head).values(seq=3))
    assert not verify(chain.unit).intact


def test_verify_notices_altered_columns_and_access_rows(chain: Services) -> None:
    from ehr_service.storage.tables import audit_access

    with tamper(chain) as conn:
        conn.execute(sa.update(audit_event).where(audit_event.c.seq == 2).values(subject="nobody"))
    verdict = verify(chain.unit)
    assert verdict.first_bad == 2 and "columns" in verdict.reason
    with tamper(chain) as conn:
        conn.execute(sa.update(audit_event).where(audit_event.c.seq == 2).values(subject="clerk"))
        conn.execute(sa.insert(audit_access).values(patient_id="someone", seq=4))
    verdict = verify(chain.unit)
    assert verdict.first_bad == 4 and "whose data" in verdict.reason


@pytest.mark.parametrize(
    "change",
    [{"kind": "read"}, {"kind": "login"}, {"entity": None}, {"entity": "Patient/other"},
     {"organization": "Organization/else"}],
)  # fmt: skip
def test_verify_names_altered_search_columns(chain: Services, change: dict[str, Any]) -> None:
    """What GET /fhir/AuditEvent filters on (type, subtype, entity) is checked too."""
    with _client(chain, "clerk") as client:
        created = client.post("/fhir/Patient", json={"resourceType": "Patient"}, headers=FHIR_JSON)
        assert created.status_code == 201
    with chain.unit.read() as conn:
        row = conn.execute(
            sa.select(audit_event.c.seq)
            .where(audit_event.c.kind == "create", audit_event.c.entity.is_not(None))
            .order_by(audit_event.c.seq.desc())
            .limit(1)
        ).first()
    assert row is not None
    with tamper(chain) as conn:
        conn.execute(sa.update(audit_event).where(audit_event.c.seq == row.seq).values(**change))
    verdict = verify(chain.unit)
    assert verdict.first_bad == row.seq and "altered" in verdict.reason
