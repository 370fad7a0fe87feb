"""Mutual recognition over HTTP: $recognizable-results, $recognition-decision,
$recognition-stats, the recognition mark, institutions and catalogue editions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from ehr_service.cli import app as cli
from ehr_service.interactions.context import Services
from tests.helpers import FHIR_JSON, bearer, lab, parameters, refusal, shipped_edition

LAB = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                    "code": "laboratory"}]}]  # fmt: skip
MARK = "urn:ehr-service:recognition-mark"


def results(response: Any) -> dict[str, dict[str, Any]]:
    """By resource reference: item code, recognizable, reasons, expiresOn."""
    assert response.status_code == 200, response.text
    out = {}
    for part in response.json()["parameter"]:
        if part["name"] != "result":
            continue
        values: dict[str, Any] = {"reasons": []}
        for p in part["part"]:
            if p["name"] == "reason":
                values["reasons"].append(p["valueCoding"]["code"])
            else:
                values[p["name"]] = next(v for k, v in p.items() if k.startswith("value"))
        key = values.get("resource", {}).get("reference", "withheld")
        out[key] = values
    return out


def ask(client: TestClient, pid: str, *items: str, as_of: str = "2026-03-15", **extra: Any) -> Any:
    parts = [{"name": "item", "valueCode": i} for i in items]
    parts.append({"name": "asOf", "valueDate": as_of})
    parts += [{"name": k, **v} for k, v in extra.items()]
    return client.post(f"/fhir/Patient/{pid}/$recognizable-results", json=parameters(*parts),
                       headers=FHIR_JSON)  # fmt: skip


def test_recognizable_results(client: TestClient, record: dict[str, str]) -> None:
    pid = record["patient"]
    found = results(ask(client, pid, "LAB-GLU", "LAB-K"))
    glucose = found[f"Observation/{record['glucose']}"]
    assert glucose["recognizable"] is True and glucose["reasons"] == []
    assert glucose["expiresOn"] == "2026-04-01"  # 30 days: recognisable through 31 March
    assert glucose["region"] == "chongqing"
    assert glucose["institution"]["reference"] == "Organization/h1"
    assert found[f"Observation/{record['glucose_old']}"]["reasons"] == ["superseded"]
    assert found[f"Observation/{record['glucose_prelim']}"]["reasons"] == ["not-final"]
    assert found[f"Observation/{record['potassium_h2']}"]["reasons"] == [
        "institution-not-quality-controlled"
    ]
    # older, but the newer potassium is from an institution that failed QC: not superseded
    assert found[f"Observation/{record['potassium_h1']}"]["reasons"] == ["expired"]
    assert f"Observation/{record['other']}" not in found
    # the last day of the window, and the day after
    day_n = results(ask(client, pid, "LAB-GLU", as_of="2026-03-31"))
    assert day_n[f"Observation/{record['glucose']}"]["recognizable"] is True
    day_n1 = results(ask(client, pid, "LAB-GLU", as_of="2026-04-01"))
    assert day_n1[f"Observation/{record['glucose']}"]["reasons"] == ["expired"]
    # a code asked for that is no catalogue item: its results say so
    unknown = {"valueCoding": {"system": "http://loinc.org", "code": "99999-9"}}
    other = results(ask(client, pid, as_of="2026-03-15", item=unknown))
    assert other[f"Observation/{record['other']}"]["reasons"] == ["not-in-catalogue"]
    # by the order's code
    order = {"resourceType": "ServiceRequest", "status": "active", "intent": "order",
             "subject": {"reference": f"Patient/{pid}"},
             "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]}}  # fmt: skip
    sr = client.post("/fhir/ServiceRequest", json=order, headers=FHIR_JSON).json()["id"]
    by_order = results(
        ask(client, pid, serviceRequest={"valueReference": {"reference": f"ServiceRequest/{sr}"}})
    )
    assert by_order[f"Observation/{record['glucose']}"]["recognizable"] is True


def test_refused_requester_sees_no_usable_result(
    client: TestClient, record: dict[str, str]
) -> None:
    pid = record["patient"]
    consent = refusal(pid, organization="Organization/h9")
    assert client.post("/fhir/Consent", json=consent, headers=FHIR_JSON).status_code == 201
    found = results(
        ask(client, pid, "LAB-GLU", requester={"valueReference": {"reference": "Organization/h9"}})
    )
    assert set(found) == {"withheld"}  # nothing says where the results are
    assert "consent-refused" in found["withheld"]["reasons"]


def decide(client: TestClient, pid: str, *parts: dict[str, Any]) -> Any:
    return client.post(f"/fhir/Patient/{pid}/$recognition-decision", json=parameters(*parts),
                       headers=FHIR_JSON)  # fmt: skip


def test_decisions_and_stats(
    client: TestClient, record: dict[str, str], services: Services
) -> None:
    pid = record["patient"]
    assert results(ask(client, pid, "LAB-GLU"))  # an offer
    item = {"name": "item", "valueCode": "LAB-GLU"}
    when = {"name": "asOf", "valueDate": "2026-03-15"}
    accept = {"name": "decision", "valueCode": "accepted"}

    def reuse(name: str) -> dict[str, Any]:
        return {"name": "result", "valueReference": {"reference": f"Observation/{record[name]}"}}

    accepted = decide(client, pid, item, when, accept, reuse("glucose"))
    assert accepted.status_code == 201, accepted.text
    task = accepted.json()
    assert task["resourceType"] == "Task" and task["code"]["coding"][0]["code"] == "accepted"
    assert task["for"]["reference"] == f"Patient/{pid}"
    # reusing what is not recognisable, a re-test without a reason, "other" without text
    stale = decide(client, pid, item, when, accept, reuse("glucose_old"))
    assert stale.status_code == 422 and "superseded" in stale.text
    assert (
        decide(client, pid, item, when, {"name": "decision", "valueCode": "retest"}).status_code
        == 422
    )
    other = decide(client, pid, item, when, {"name": "decision", "valueCode": "retest"},
                   {"name": "reason", "valueCode": "other"})  # fmt: skip
    assert other.status_code == 422
    assert (
        decide(client, pid, item, when, {"name": "decision", "valueCode": "maybe"}).status_code
        == 400
    )
    for reason in ("emergency", "condition-changed"):
        retest = decide(client, pid, item, when, {"name": "decision", "valueCode": "retest"},
                        {"name": "reason", "valueCode": reason})  # fmt: skip
        assert retest.status_code == 201
        assert retest.json()["reasonCode"]["coding"][0]["code"] == reason
    with_text = decide(client, pid, item, when, {"name": "decision", "valueCode": "retest"},
                       {"name": "reason", "valueCode": "other"},
                       {"name": "reasonText", "valueString": "患者要求"})  # fmt: skip
    assert with_text.status_code == 201 and with_text.json()["reasonCode"]["text"] == "患者要求"
    # the decisions are in the resident's record, for the resident to see
    patient_token = bearer(services.settings, "patient/*.rs", patient=pid)
    tasks = client.get("/fhir/Task", params={"patient": pid}, headers=patient_token).json()
    assert tasks["total"] == 4
    mine = client.get("/citizen/v1/me/results", params={"limit": 50}, headers=patient_token)
    assert mine.status_code == 200, mine.text
    shown = {i["id"]: i["recognition"] for i in mine.json()["items"]}
    assert shown[record["glucose"]]["mark"] == "川渝HR"
    assert [d["task"] for d in shown[record["glucose"]]["reusedBy"]] == [task["id"]]
    assert shown[record["potassium_h2"]] == {"mark": None, "reusedBy": []}
    stats = client.get("/fhir/$recognition-stats", params={"groupBy": "item"})
    assert stats.status_code == 200, stats.text
    (group,) = [p for p in stats.json()["parameter"] if p["name"] == "group"]
    figures = {p["name"]: p for p in group["part"]}
    assert figures["group"]["valueString"] == "LAB-GLU"
    assert figures["offered"]["valueInteger"] >= 1
    assert figures["accepted"]["valueInteger"] == 1
    assert figures["retested"]["valueInteger"] == 3
    assert figures["testsAvoided"]["valueInteger"] == 1
    assert figures["costAvoided"]["valueMoney"] == {"value": 4.0, "currency": "CNY"}
    reasons = {p["part"][0]["valueCoding"]["code"]: p["part"][1]["valueInteger"]
               for p in group["part"] if p["name"] == "retestReason"}  # fmt: skip
    assert reasons == {"condition-changed": 1, "emergency": 1, "other": 1}
    by_institution = client.get(
        "/fhir/$recognition-stats", params={"groupBy": "institution"}
    ).json()
    groups = [
        p["part"][0]["valueString"] for p in by_institution["parameter"] if p["name"] == "group"
    ]
    assert "Organization/h1" in groups
    assert client.get("/fhir/$recognition-stats", params={"groupBy": "color"}).status_code == 400
    assert client.get("/fhir/$recognition-stats", headers=patient_token).status_code == 403


def test_recognition_mark_is_set_by_the_server_only(
    client: TestClient, record: dict[str, str]
) -> None:
    def tags(resource_id: str) -> list[Any]:
        meta = client.get(f"/fhir/Observation/{resource_id}").json()["meta"]
        return [t["code"] for t in meta.get("tag", []) if t["system"] == MARK]

    assert tags(record["glucose"]) == ["川渝HR"]
    assert tags(record["glucose_old"]) == ["川渝HR"]  # qualifies; the window is another matter
    assert tags(record["potassium_h2"]) == []  # its institution failed QC
    assert tags(record["glucose_prelim"]) == []
    assert tags(record["other"]) == []
    forged = lab(record["patient"], "99999-9", "2026-03-01", "h1")
    forged["meta"] = {"tag": [{"system": MARK, "code": "川渝HR"}]}
    created = client.post("/fhir/Observation", json=forged, headers=FHIR_JSON).json()
    assert "tag" not in created["meta"]
    found = client.get("/fhir/Observation", params={"_tag": f"{MARK}|川渝HR", "_summary": "count"})
    assert found.json()["total"] == 3


def test_institutions_and_editions_from_the_command_line(
    client: TestClient, services: Services, database_url: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("EHR_DATABASE_URL", database_url)
    monkeypatch.setenv("EHR_DATA_DIR", str(services.settings.data_dir))
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(cli, list(args))
        assert result.exit_code == 0, result.output
        return result.output

    run(
        "institution",
        "add",
        "wch",
        "--name",
        "四川大学华西医院",
        "--region",
        "sichuan",
        "--level",
        "3A",
    )
    run("institution", "qc", "wch", "--category", "lab-chemistry", "--scheme", "NCCL EQA",
        "--cycle", "2026-1", "--from", "2026-01-01", "--to", "2026-12-31")  # fmt: skip
    shown = run("institution", "show", "wch")
    assert "region=sichuan" in shown and "lab-chemistry" in shown and "passed" in shown
    org = client.get("/fhir/Organization/wch").json()
    assert org["name"] == "四川大学华西医院"
    # an edition switch: 2025 drops potassium and shortens glucose to 14 days

    document = shipped_edition()
    codesystem = document["entry"][0]["resource"]
    codesystem["version"], codesystem["id"] = "2025", "recognition-items-2025"
    document["entry"][1]["resource"]["id"] = "recognition-items-map-2025"
    codesystem["concept"] = [c for c in codesystem["concept"] if c["code"] != "LAB-K"]
    for concept in codesystem["concept"]:
        for prop in concept["property"]:
            if concept["code"] == "LAB-GLU" and prop["code"] == "validityDays":
                prop["valueInteger"] = 14
    path = tmp_path / "catalogue-2025.json"
    path.write_bytes(orjson.dumps(document))
    assert "edition 2025 active: 111 items" in run("catalogue", "load", str(path))
    listed = run("catalogue", "list")
    assert "2025  111 items  active" in listed and "2024  112 items  -" in listed
    assert client.get("/fhir/CodeSystem/recognition-items-2025").status_code == 200
    assert (
        CliRunner().invoke(cli, ["catalogue", "load", str(tmp_path / "missing.json")]).exit_code
        == 1
    )


def test_a_catalogue_that_fails_to_store_is_not_activated(
    client: TestClient, services: Services, database_url: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip

    monkeypatch.setenv("EHR_DATABASE_URL", database_url)
    monkeypatch.setenv("EHR_DATA_DIR", str(services.settings.data_dir))
    document = shipped_edition()
    codesystem = document["entry"][0]["resource"]
    codesystem["version"] = "2026"
    del codesystem["status"]  # not a valid CodeSystem
    path = tmp_path / "broken.json"
    path.write_bytes(orjson.dumps(document))
    assert CliRunner().invoke(cli, ["catalogue", "load", str(path)]).exit_code == 1
    listed = CliRunner().invoke(cli, ["catalogue", "list"]).output
    assert "2026" not in listed and "2024  112 items  active" in listed
