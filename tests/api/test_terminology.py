"""The recognition catalogue as FHIR terminology from the first start, with
$lookup, $validate-code, $expand and $translate."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from ehr_service.cli import app as cli
from ehr_service.interactions.context import Services
from ehr_service.recognition.catalogue import REFRESH_SECONDS
from tests.helpers import FHIR_JSON, shipped_edition

SYSTEM = "urn:ehr-service:recognition-item"
LAB_VS = "urn:ehr-service:ValueSet/recognition-items-laboratory"
IMAGING_VS = "urn:ehr-service:ValueSet/recognition-items-imaging"


def _parameter(body: dict[str, Any], name: str) -> Any:
    part = next(p for p in body["parameter"] if p["name"] == name)
    return next(v for k, v in part.items() if k.startswith("value") or k == "part")


def test_published_from_the_first_start(client: TestClient) -> None:
    (codesystem,) = [e["resource"] for e in client.get("/fhir/CodeSystem").json()["entry"]]
    assert codesystem["url"] == SYSTEM and len(codesystem["concept"]) == 112
    categories = [
        next(p["valueCode"] for p in c["property"] if p["code"] == "category")
        for c in codesystem["concept"]
    ]
    assert categories.count("laboratory") == 45 and categories.count("imaging") == 67
    valuesets = {e["resource"]["url"] for e in client.get("/fhir/ValueSet").json()["entry"]}
    assert {LAB_VS, IMAGING_VS} <= valuesets
    assert (
        client.get("/fhir/ConceptMap?url=urn:ehr-service:recognition-item-map").json()["total"] == 1
    )


def test_lookup(client: TestClient) -> None:
    found = client.get(f"/fhir/CodeSystem/$lookup?system={SYSTEM}&code=LAB-GLU")
    assert found.status_code == 200, found.text
    body = found.json()
    assert body["resourceType"] == "Parameters"
    assert _parameter(body, "display")
    designations = [p for p in body["parameter"] if p["name"] == "designation"]
    assert any(part.get("valueCode") == "zh-CN" for d in designations for part in d["part"])
    properties = {
        d["part"][0]["valueCode"]: d["part"][1]
        for d in body["parameter"]
        if d["name"] == "property"
    }
    assert properties["category"] == {"name": "value", "valueCode": "laboratory"}
    posted = client.post(
        "/fhir/CodeSystem/$lookup",
        json={"resourceType": "Parameters", "parameter": [
            {"name": "system", "valueUri": SYSTEM}, {"name": "code", "valueCode": "LAB-GLU"},
            {"name": "property", "valueCode": "category"}]},
        headers=FHIR_JSON,
    )  # fmt: skip
    assert posted.status_code == 200
    assert [p for p in posted.json()["parameter"] if p["name"] == "property"] == [
        {"name": "property", "part": [{"name": "code", "valueCode": "category"},
                                      {"name": "value", "valueCode": "laboratory"}]}
    ]  # fmt: skip
    assert client.get(f"/fhir/CodeSystem/$lookup?system={SYSTEM}&code=NOPE").status_code == 404
    assert client.get("/fhir/CodeSystem/$lookup?system=http://loinc.org&code=1").status_code == 404
    assert client.get("/fhir/CodeSystem/$lookup?system=" + SYSTEM).status_code == 400


def test_validate_code(client: TestClient) -> None:
    def result(path: str) -> bool:
        response = client.get(path)
        assert response.status_code == 200, response.text
        return bool(_parameter(response.json(), "result"))

    assert result(f"/fhir/CodeSystem/$validate-code?url={SYSTEM}&code=LAB-GLU")
    assert not result(f"/fhir/CodeSystem/$validate-code?url={SYSTEM}&code=LAB-NOPE")
    assert result(f"/fhir/ValueSet/$validate-code?url={LAB_VS}&code=LAB-GLU&system={SYSTEM}")
    assert not result(f"/fhir/ValueSet/$validate-code?url={IMAGING_VS}&code=LAB-GLU")
    assert client.get("/fhir/ValueSet/$validate-code?url=urn:x&code=1").status_code == 404


def test_expand_with_filter_count_and_offset(client: TestClient) -> None:
    whole = client.get(f"/fhir/ValueSet/$expand?url={LAB_VS}").json()["expansion"]
    assert whole["total"] == 45 and len(whole["contains"]) == 45
    page = client.get(f"/fhir/ValueSet/$expand?url={IMAGING_VS}&count=10&offset=60").json()
    assert page["expansion"]["total"] == 67 and len(page["expansion"]["contains"]) == 7
    assert page["expansion"]["offset"] == 60
    filtered = client.get(f"/fhir/ValueSet/$expand?url={LAB_VS}&filter=gluc").json()["expansion"]
    assert filtered["total"] >= 1
    assert all("glu" in (c["code"] + c["display"]).lower() for c in filtered["contains"])
    chinese = client.get(f"/fhir/ValueSet/$expand?url={LAB_VS}&filter=葡萄糖").json()["expansion"]
    assert chinese["total"] >= 1
    by_id = client.get("/fhir/ValueSet/recognition-items-imaging/$expand?count=1").json()
    assert by_id["expansion"]["total"] == 67
    assert client.get(f"/fhir/ValueSet/$expand?url={LAB_VS}&count=x").status_code == 400


def test_translate(client: TestClient) -> None:
    found = client.get("/fhir/ConceptMap/$translate?system=http://loinc.org&code=2345-7").json()
    assert _parameter(found, "result") is True
    match = next(p for p in found["parameter"] if p["name"] == "match")
    concept = next(p["valueCoding"] for p in match["part"] if p["name"] == "concept")
    assert concept["system"] == SYSTEM and concept["code"] == "LAB-GLU"
    missing = client.get("/fhir/ConceptMap/$translate?system=http://loinc.org&code=0000-0").json()
    assert _parameter(missing, "result") is False


def test_operations_on_a_stored_instance(client: TestClient) -> None:
    """CodeSystem/{id}/$validate-code, ValueSet/{id}/$validate-code and
    ConceptMap/{id}/$translate work on the stored resource's url."""

    def stored(resource_type: str, url: str) -> str:
        entry = client.get(f"/fhir/{resource_type}", params={"url": url}).json()["entry"]
        return str(entry[0]["resource"]["id"])

    def result(path: str, **body: Any) -> bool:
        response = client.post(path, json=body, headers=FHIR_JSON) if body else client.get(path)
        assert response.status_code == 200, response.text
        return bool(_parameter(response.json(), "result"))

    codesystem = stored("CodeSystem", SYSTEM)
    assert result(f"/fhir/CodeSystem/{codesystem}/$validate-code?code=LAB-GLU")
    assert not result(f"/fhir/CodeSystem/{codesystem}/$validate-code?code=LAB-NOPE")
    imaging = stored("ValueSet", IMAGING_VS)
    laboratory = stored("ValueSet", LAB_VS)
    assert result(f"/fhir/ValueSet/{laboratory}/$validate-code?code=LAB-GLU")
    assert not result(f"/fhir/ValueSet/{imaging}/$validate-code?code=LAB-GLU")
    posted = {"resourceType": "Parameters", "parameter": [
        {"name": "coding", "valueCoding": {"system": SYSTEM, "code": "LAB-GLU"}}]}  # fmt: skip
    assert result(f"/fhir/ValueSet/{laboratory}/$validate-code", **posted)
    conceptmap = stored("ConceptMap", "urn:ehr-service:recognition-item-map")
    assert result(f"/fhir/ConceptMap/{conceptmap}/$translate?system=http://loinc.org&code=2345-7")
    # An instance that is not the catalogue's, an unknown id, a deleted one
    other = {"resourceType": "CodeSystem", "url": "urn:other", "status": "active",
             "content": "not-present"}  # fmt: skip
    other_id = client.post("/fhir/CodeSystem", json=other, headers=FHIR_JSON).json()["id"]
    assert client.get(f"/fhir/CodeSystem/{other_id}/$validate-code?code=x").status_code == 404
    assert client.get("/fhir/ValueSet/nothing/$validate-code?code=LAB-GLU").status_code == 404
    assert client.delete(f"/fhir/CodeSystem/{other_id}").status_code in {200, 204}
    assert client.get(f"/fhir/CodeSystem/{other_id}/$validate-code?code=x").status_code == 410
    assert client.get("/fhir/ConceptMap/x%20y/$translate?code=1").status_code == 400


def test_expand_on_a_stored_instance_reads_its_url(client: TestClient) -> None:
    """ValueSet/{id}/$expand expands the stored ValueSet's url, whatever its id; an
    unknown id is a 404 OperationOutcome, a deleted one a 410."""
    copy = {"resourceType": "ValueSet", "url": LAB_VS, "status": "active"}
    copy_id = client.post("/fhir/ValueSet", json=copy, headers=FHIR_JSON).json()["id"]
    expanded = client.get(f"/fhir/ValueSet/{copy_id}/$expand?count=1")
    assert expanded.status_code == 200, expanded.text
    whole = client.get(f"/fhir/ValueSet/$expand?url={LAB_VS}").json()["expansion"]
    assert expanded.json()["expansion"]["total"] == whole["total"]
    posted = client.post(
        f"/fhir/ValueSet/{copy_id}/$expand",
        json={"resourceType": "Parameters", "parameter": [{"name": "count", "valueInteger": 1}]},
        headers=FHIR_JSON,
    )
    assert posted.status_code == 200 and len(posted.json()["expansion"]["contains"]) == 1
    for unknown in ("nothing", "recognition-items-nope"):
        missing = client.get(f"/fhir/ValueSet/{unknown}/$expand")
        assert missing.status_code == 404, missing.text
        assert missing.json()["resourceType"] == "OperationOutcome"
    other = {"resourceType": "ValueSet", "url": "urn:other", "status": "active"}
    other_id = client.post("/fhir/ValueSet", json=other, headers=FHIR_JSON).json()["id"]
    assert client.get(f"/fhir/ValueSet/{other_id}/$expand").status_code == 404
    assert client.delete(f"/fhir/ValueSet/{copy_id}").status_code in {200, 204}
    assert client.get(f"/fhir/ValueSet/{copy_id}/$expand").status_code == 410


def test_an_edition_switch_replaces_the_terminology(
    client: TestClient, services: Services, database_url: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("EHR_DATABASE_URL", database_url)
    monkeypatch.setenv("EHR_DATA_DIR", str(services.settings.data_dir))
    document = shipped_edition()
    codesystem = document["entry"][0]["resource"]
    codesystem["version"], codesystem["id"] = "2025", "recognition-items-2025"
    document["entry"][1]["resource"]["id"] = "recognition-items-map-2025"
    codesystem["concept"] = [c for c in codesystem["concept"] if c["code"] != "LAB-K"]
    codesystem["count"] = len(codesystem["concept"])
    path = tmp_path / "edition.json"
    path.write_bytes(orjson.dumps(document))
    result = CliRunner().invoke(cli, ["catalogue", "load", str(path)])
    assert result.exit_code == 0, result.output
    time.sleep(REFRESH_SECONDS + 0.1)  # the server sees another process's switch this soon
    active = client.get(f"/fhir/CodeSystem?url={SYSTEM}&status=active").json()["entry"]
    assert [e["resource"]["version"] for e in active] == ["2025"]
    retired = client.get("/fhir/CodeSystem/recognition-items-2024").json()
    assert retired["status"] == "retired"
    lab = client.get("/fhir/ValueSet/recognition-items-laboratory").json()
    assert lab["version"] == "2025"
    assert client.get(f"/fhir/CodeSystem/$lookup?system={SYSTEM}&code=LAB-K").status_code == 404


def test_standard_input_types(client: TestClient) -> None:
    expanded = client.post(
        "/fhir/ValueSet/$expand",
        json={"resourceType": "Parameters", "parameter": [
            {"name": "url", "valueUri": LAB_VS}, {"name": "count", "valueInteger": 3},
            {"name": "offset", "valueInteger": 2}]},
        headers=FHIR_JSON,
    )  # fmt: skip
    assert expanded.status_code == 200, expanded.text
    assert len(expanded.json()["expansion"]["contains"]) == 3
    for operation in ("CodeSystem/$lookup", "CodeSystem/$validate-code"):
        coded = client.post(
            f"/fhir/{operation}",
            json={"resourceType": "Parameters", "parameter": [
                {"name": "coding", "valueCoding": {"system": SYSTEM, "code": "LAB-GLU"}}]},
            headers=FHIR_JSON,
        )  # fmt: skip
        assert coded.status_code == 200, (operation, coded.text)
    concept = client.post(
        "/fhir/ConceptMap/$translate",
        json={"resourceType": "Parameters", "parameter": [{"name": "codeableConcept",
              "valueCodeableConcept": {"coding": [{"system": "http://loinc.org",
                                                   "code": "2345-7"}]}}]},
        headers=FHIR_JSON,
    )  # fmt: skip
    assert _parameter(concept.json(), "result") is True
    versioned = client.get(f"/fhir/ValueSet/$validate-code?url={LAB_VS}|2024&code=LAB-GLU")
    assert versioned.status_code == 200 and _parameter(versioned.json(), "result") is True
