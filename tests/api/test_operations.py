"""Health, readiness (failing when the database is down), metrics, log hygiene."""

from __future__ import annotations

import logging
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient

from ehr_service.api.observability import JsonFormatter
from ehr_service.app import build_services, create_app
from ehr_service.config import Settings
from ehr_service.interactions.context import Services
from ehr_service.mpi.redaction import RedactIdNumbers
from tests.helpers import FHIR_JSON, id_identifier, make_id_number


def test_health_and_readiness_need_no_token(client: TestClient) -> None:
    anonymous = {"Authorization": ""}
    assert client.get("/healthz", headers=anonymous).json() == {"status": "ok"}
    ready = client.get("/readyz", headers=anonymous)
    assert ready.status_code == 200, ready.text
    checks = ready.json()["checks"]
    assert checks.pop("disk_free_mb") > 0
    assert checks == {
        "database": True,
        "migrations": True,
        "field_keys": True,
        "signing_key": True,
        "disk": True,
    }


def test_readiness_fails_when_the_database_is_down(tmp_path: Path) -> None:
    settings = Settings(
        environment="test", data_dir=tmp_path, database_url="postgresql://postgres@127.0.0.1:9/none"
    )
    app = create_app(services=build_services(settings))
    client = TestClient(app, raise_server_exceptions=False)  # no lifespan: the db is down
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"] is False
    assert ready.json()["status"] == "not-ready"


def test_metrics(client: TestClient) -> None:
    pid = client.post("/fhir/Patient", json={"resourceType": "Patient"}, headers=FHIR_JSON).json()[
        "id"
    ]
    client.get(f"/fhir/Patient/{pid}")
    client.get("/fhir/Patient/missing")
    text = client.get("/metrics", headers={"Authorization": ""}).text
    read = (
        'ehr_http_requests_total{interaction="read_resource",resource_type="Patient",status="200"}'
    )
    assert f"{read} 1.0" in text
    assert 'status="404"' in text
    assert "ehr_http_request_duration_seconds_bucket" in text
    assert "ehr_audit_chain_length" in text and "ehr_db_pool_in_use" in text
    assert "ehr_audit_unsealed_events" in text and "ehr_audit_unsealed_oldest_seconds" in text
    assert "# TYPE ehr_exchange_outbox_rows gauge" in text
    assert 'ehr_resource_writes_total{resource_type="Patient"} 1.0' in text


def test_logs_carry_no_personal_data(
    client: TestClient, services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    number = make_id_number()
    name, phone = "欧阳娜娜", "13812345678"
    patient = {
        "resourceType": "Patient",
        "identifier": [id_identifier(number)],
        "name": [{"text": name}],
        "telecom": [{"system": "phone", "value": phone}],
    }
    with caplog.at_level(logging.INFO):
        pid = client.post("/fhir/Patient", json=patient, headers=FHIR_JSON).json()["id"]
        client.get("/fhir/Patient", params={"name": name, "phone": phone})
        client.get(
            "/fhir/Patient", params={"identifier": f"{id_identifier(number)['system']}|{number}"}
        )
        client.put(
            f"/fhir/Patient/{pid}", json={**patient, "id": pid, "gender": "bad"}, headers=FHIR_JSON
        )
        client.get(f"/fhir/{number}")
    formatter, redact = JsonFormatter(), RedactIdNumbers()
    lines = []
    for record in caplog.records:
        if not record.name.startswith(("ehr_service", "uvicorn")):
            continue  # the test's own HTTP client logs its URLs: not the service's log
        redact.filter(record)
        lines.append(formatter.format(record))
    access = [orjson.loads(line) for line in lines if '"message": "request"' in line]
    assert len(access) >= 5
    assert {"request_id", "status", "interaction", "client", "duration_ms"} <= set(access[0])
    text = "\n".join(lines)
    for secret in (number, name, phone):
        assert secret not in text
