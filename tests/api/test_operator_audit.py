"""Every operator write is an audit event on the chain (``ehr-service`` commands)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from joserfc.jwk import ECKey
from typer.testing import CliRunner

from ehr_service.cli import app as cli
from ehr_service.interactions.context import Services
from tests.helpers import FHIR_JSON, audit_get, lab, patient, seal_and_verify, shipped_edition


def _operator_events(client: TestClient, command: str) -> list[dict[str, Any]]:
    bundle = audit_get(client, f"/fhir/AuditEvent?subtype={command}&_count=100").json()
    return [e["resource"] for e in bundle.get("entry", [])]


@pytest.fixture
def run(services: Services, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("EHR_DATABASE_URL", database_url)
    monkeypatch.setenv("EHR_DATA_DIR", str(services.settings.data_dir))
    runner = CliRunner()

    def invoke(*args: str) -> str:
        result = runner.invoke(cli, list(args))
        assert result.exit_code == 0, result.output
        return result.output

    return invoke


def test_institution_commands_are_audited(client: TestClient, services: Services, run: Any) -> None:
    before = len(_operator_events(client, "institution-add"))
    run("institution", "add", "op-h1", "--name", "Hospital", "--region", "chongqing")
    run("institution", "qc", "op-h1", "--category", "lab-chemistry", "--scheme", "NCCL EQA",
        "--cycle", "2026-1", "--from", "2026-01-01", "--to", "2026-12-31")  # fmt: skip
    added = _operator_events(client, "institution-add")
    assert len(added) == before + 1
    event = added[0]
    assert event["type"]["code"] == "110100"
    assert event["action"] == "C"
    assert event["agent"][0]["role"] == [  # an operator, acting as the system administrator
        {"text": "operator"},
        {"coding": [{"system": "urn:ehr-service:admin-role", "code": "sysadmin"}],
         "text": "sysadmin"},
    ]  # fmt: skip
    assert event["agent"][0]["who"]["identifier"]["value"].startswith("operator:")
    assert len(_operator_events(client, "institution-qc")) >= 1
    history = client.get("/fhir/Organization/op-h1/_history").json()
    assert history["total"] == 2  # two versions, each with its event
    assert seal_and_verify(services).intact


def test_import_and_catalogue_load_are_audited(
    client: TestClient, services: Services, run: Any, tmp_path: Path
) -> None:
    pid = client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON).json()["id"]
    lines = [orjson.dumps({**patient(), "id": f"imported-{n}"}) for n in range(3)]
    (tmp_path / "Patient.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    imports = len(_operator_events(client, "import"))
    run("import", str(tmp_path / "Patient.ndjson"), "--errors", str(tmp_path / "errors.txt"))
    assert len(_operator_events(client, "import")) == imports + 1
    # a result whose mark changes when the edition does: the re-marking is audited
    client.put("/fhir/Organization/h1", json={"resourceType": "Organization", "id": "h1"},
               headers=FHIR_JSON)  # fmt: skip
    client.post("/fhir/Observation", json=lab(pid, "2345-7", "2026-03-01", "h1"), headers=FHIR_JSON)
    document = shipped_edition()
    codesystem = document["entry"][0]["resource"]
    codesystem["version"], codesystem["id"] = "2031", "recognition-items-2031"
    document["entry"][1]["resource"]["id"] = "recognition-items-map-2031"
    edition = tmp_path / "edition.json"
    edition.write_bytes(orjson.dumps(document))
    loads = len(_operator_events(client, "catalogue-load"))
    run("catalogue", "load", str(edition))
    loaded = _operator_events(client, "catalogue-load")
    assert len(loaded) > loads  # each of its transactions is on the chain
    assert {e["subtype"][0]["code"] for e in loaded} == {"catalogue-load"}
    assert seal_and_verify(services).intact


def test_partner_commands_are_audited(client: TestClient, services: Services, run: Any,
                                      tmp_path: Path) -> None:  # fmt: skip
    jwks = tmp_path / "jwks.json"
    key = ECKey.generate_key("P-256")
    public = {**key.as_dict(private=False), "kid": key.thumbprint()}
    jwks.write_bytes(orjson.dumps({"keys": [public]}))
    before = len(_operator_events(client, "partner-add"))
    run("partner", "add", "op-partner", "--name", "P", "--region", "sichuan", "--audience",
        "urn:x", "--jwks", str(jwks), "--allow", "Observation")  # fmt: skip
    run("partner", "remove", "op-partner")
    assert len(_operator_events(client, "partner-add")) == before + 1
    assert len(_operator_events(client, "partner-remove")) >= 1


def test_operator_events_name_what_they_changed(
    client: TestClient, services: Services, run: Any, tmp_path: Path
) -> None:
    run("institution", "add", "op-h2", "--name", "Hospital", "--region", "chongqing")
    pid = client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON).json()["id"]
    result = client.post(
        "/fhir/Observation", json=lab(pid, "2345-7", "2026-03-01", "op-h2"), headers=FHIR_JSON
    ).json()
    # quality control passed: the resident's result is re-marked, a new version
    run("institution", "qc", "op-h2", "--category", "lab-chemistry", "--scheme", "NCCL EQA",
        "--cycle", "2026-1", "--from", "2020-01-01", "--to", "2030-12-31")  # fmt: skip
    assert client.get(f"/fhir/Observation/{result['id']}").json()["meta"]["versionId"] == "2"
    (latest, *_) = _operator_events(client, "institution-qc")
    assert {"reference": "Organization/op-h2"} in [e.get("what") for e in latest["entity"]]
    assert {"reference": f"Patient/{pid}"} in [e.get("what") for e in latest["entity"]]
    mine = audit_get(client, f"/fhir/AuditEvent?patient={pid}&subtype=institution-qc").json()
    assert len(mine["entry"]) == 1  # the resident sees who changed their result
    # an import names the records it wrote; an export is on the chain too
    (tmp_path / "p.ndjson").write_bytes(orjson.dumps({**patient(), "id": "op-imported"}))
    run("import", str(tmp_path / "p.ndjson"), "--errors", str(tmp_path / "errors.txt"))
    assert audit_get(client, "/fhir/AuditEvent?patient=op-imported&subtype=import").json()["entry"]
    exports = len(_operator_events(client, "export"))
    run("export", "--out", str(tmp_path / "out"), "--type", "Patient")
    (export, *_) = _operator_events(client, "export")
    assert len(_operator_events(client, "export")) == exports + 1
    assert export["action"] == "R"
    assert seal_and_verify(services).intact
