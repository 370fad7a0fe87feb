"""The recognition catalogue by national medical-service price item code
(全国医疗服务价格项目规范): the ``serviceItem`` property in editions, ``$lookup``,
``$translate`` (one national code to every item it covers) and
``$recognizable-results`` asked by that code."""

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
from ehr_service.recognition.catalogue import (
    REFRESH_SECONDS,
    SERVICE_ITEM_SYSTEM,
    CatalogueError,
    parse_edition,
)
from tests.helpers import FHIR_JSON, organization, parameters, shipped_edition

SUPERFICIAL = "220201007"  # 浅表组织器官B超检查
COVERED = {"IMG-US-THYROID", "IMG-US-BREAST", "IMG-US-SCROTUM", "IMG-US-NECKNODES"}
DCM = "http://dicom.nema.org/resources/ontology/DCM"
SCT = "http://snomed.info/sct"


def _properties(body: dict[str, Any], name: str) -> list[Any]:
    return [
        p["part"][1]["valueCode"]
        for p in body["parameter"]
        if p["name"] == "property" and p["part"][0]["valueCode"] == name
    ]


def _matches(body: dict[str, Any]) -> dict[str, str]:
    out = {}
    for match in (p for p in body["parameter"] if p["name"] == "match"):
        parts = {p["name"]: p for p in match["part"]}
        out[parts["concept"]["valueCoding"]["code"]] = parts["equivalence"]["valueCode"]
    return out


def study(pid: str, site: str, org: str = "us1", **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "ImagingStudy",
        "status": "available",
        "subject": {"reference": f"Patient/{pid}"},
        "started": "2026-03-01T09:00:00+08:00",
        "series": [
            {
                "uid": "1.2.156.1.1",
                "modality": {"system": DCM, "code": "US"},
                "bodySite": {"system": SCT, "code": site},
                "performer": [{"actor": {"reference": f"Organization/{org}"}}],
            }
        ],
        **extra,
    }


def ask(client: TestClient, pid: str, *codings: dict[str, Any]) -> Any:
    parts = [{"name": "item", "valueCoding": c} for c in codings]
    parts.append({"name": "asOf", "valueDate": "2026-03-15"})
    return client.post(f"/fhir/Patient/{pid}/$recognizable-results", json=parameters(*parts),
                       headers=FHIR_JSON)  # fmt: skip


def test_lookup_shows_the_national_code(client: TestClient) -> None:
    body = client.get(
        "/fhir/CodeSystem/$lookup?system=urn:ehr-service:recognition-item&code=IMG-US-THYROID"
    ).json()
    assert _properties(body, "serviceItem") == [SUPERFICIAL]
    glucose = client.get(
        "/fhir/CodeSystem/$lookup?system=urn:ehr-service:recognition-item&code=LAB-GLU"
    ).json()
    assert _properties(glucose, "serviceItem") == []  # no public source named: absent
    (codesystem,) = [e["resource"] for e in client.get("/fhir/CodeSystem").json()["entry"]]
    assert "serviceItem" in {p["code"] for p in codesystem["property"]}


def test_translate_from_the_national_code(client: TestClient) -> None:
    found = client.get(
        f"/fhir/ConceptMap/$translate?system={SERVICE_ITEM_SYSTEM}&code={SUPERFICIAL}"
    )
    assert found.status_code == 200, found.text
    assert _matches(found.json()) == dict.fromkeys(COVERED, "narrower")
    none = client.get(f"/fhir/ConceptMap/$translate?system={SERVICE_ITEM_SYSTEM}&code=999")
    assert none.status_code == 200 and none.json()["parameter"][0]["valueBoolean"] is False
    assert "match" not in {p["name"] for p in none.json()["parameter"]}
    # a national code is not an item code: LOINC and the catalogue still map one to one
    loinc = client.get("/fhir/ConceptMap/$translate?system=http://loinc.org&code=2345-7").json()
    assert _matches(loinc) == {"LAB-GLU": "equivalent"}


def test_recognizable_results_by_the_national_code(client: TestClient) -> None:
    org = organization("us1", category="imaging-US")
    assert client.put("/fhir/Organization/us1", json=org, headers=FHIR_JSON).status_code == 201
    pid = client.post("/fhir/Patient", json={"resourceType": "Patient"},
                      headers=FHIR_JSON).json()["id"]  # fmt: skip
    made = {}
    for name, site in (("thyroid", "69748006"), ("breast", "76752008"), ("heart", "80891009")):
        response = client.post("/fhir/ImagingStudy", json=study(pid, site), headers=FHIR_JSON)
        assert response.status_code == 201, response.text
        made[name] = f"ImagingStudy/{response.json()['id']}"
    body = ask(client, pid, {"system": SERVICE_ITEM_SYSTEM, "code": SUPERFICIAL})
    assert body.status_code == 200, body.text
    found = {}
    for part in (p for p in body.json()["parameter"] if p["name"] == "result"):
        values = {p["name"]: p for p in part["part"]}
        found[values["resource"]["valueReference"]["reference"]] = (
            values["item"]["valueCoding"]["code"], values["recognizable"]["valueBoolean"]
        )  # fmt: skip
    assert found == {
        made["thyroid"]: ("IMG-US-THYROID", True),
        made["breast"]: ("IMG-US-BREAST", True),
    }  # the heart ultrasound is of no item the national code covers
    unknown = ask(client, pid, {"system": SERVICE_ITEM_SYSTEM, "code": "000000000"}).json()
    assert [p["valueCoding"]["code"] for p in unknown["parameter"]
            if p["name"] == "notInCatalogue"] == ["000000000"]  # fmt: skip
    # a decision is for one item: a national code covering four is refused, not guessed
    decision = client.post(
        f"/fhir/Patient/{pid}/$recognition-decision",
        json=parameters(
            {"name": "item", "valueCoding": {"system": SERVICE_ITEM_SYSTEM, "code": SUPERFICIAL}},
            {"name": "decision", "valueCode": "accepted"},
            {"name": "result", "valueReference": {"reference": made["thyroid"]}},
        ),
        headers=FHIR_JSON,
    )
    assert decision.status_code == 422, decision.text
    assert "one catalogue item" in decision.json()["issue"][0]["diagnostics"]


def _edition(version: str, codes: dict[str, list[Any]]) -> dict[str, Any]:
    document = shipped_edition()
    codesystem = document["entry"][0]["resource"]
    codesystem["version"], codesystem["id"] = version, f"recognition-items-{version}"
    document["entry"][1]["resource"]["id"] = f"recognition-items-map-{version}"
    for concept in codesystem["concept"]:
        concept["property"] = [p for p in concept["property"] if p["code"] != "serviceItem"]
        concept["property"] += [
            {"code": "serviceItem", **v} for v in codes.get(concept["code"], [])
        ]
    return document


def test_catalogue_load_takes_the_property(
    client: TestClient, services: Services, database_url: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("EHR_DATABASE_URL", database_url)
    monkeypatch.setenv("EHR_DATA_DIR", str(services.settings.data_dir))
    # two national codes on one item, one code on two items
    document = _edition("2025", {
        "IMG-US-KIDNEY": [{"valueCode": "220201001"}, {"valueString": "220201002"}],
        "IMG-US-URINARY": [{"valueCode": "220201002"}],
    })  # fmt: skip
    path = tmp_path / "catalogue-2025.json"
    path.write_bytes(orjson.dumps(document))
    result = CliRunner().invoke(cli, ["catalogue", "load", str(path)])
    assert result.exit_code == 0, result.output
    time.sleep(REFRESH_SECONDS + 0.1)
    both = client.get(f"/fhir/ConceptMap/$translate?system={SERVICE_ITEM_SYSTEM}&code=220201002")
    assert set(_matches(both.json())) == {"IMG-US-KIDNEY", "IMG-US-URINARY"}
    kidney = client.get(
        "/fhir/CodeSystem/$lookup?system=urn:ehr-service:recognition-item&code=IMG-US-KIDNEY"
    ).json()
    assert _properties(kidney, "serviceItem") == ["220201001", "220201002"]
    gone = client.get(
        f"/fhir/ConceptMap/$translate?system={SERVICE_ITEM_SYSTEM}&code={SUPERFICIAL}"
    )
    assert _matches(gone.json()) == {}  # the 2025 edition no longer carries it


@pytest.mark.parametrize(
    "value",
    [{"valueCode": ""}, {"valueCode": "x" * 33}, {"valueInteger": 220201007},
     {"valueCode": "2202 01"}, {"valueCode": "220201007;drop"}],
)  # fmt: skip
def test_a_bad_national_code_refuses_the_edition(
    value: dict[str, Any], client: TestClient, services: Services, database_url: str,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    document = _edition("2026", {"IMG-US-THYROID": [value]})
    with pytest.raises(CatalogueError, match="serviceItem"):
        parse_edition(document)
    monkeypatch.setenv("EHR_DATABASE_URL", database_url)
    monkeypatch.setenv("EHR_DATA_DIR", str(services.settings.data_dir))
    path = tmp_path / "bad.json"
    path.write_bytes(orjson.dumps(document))
    assert CliRunner().invoke(cli, ["catalogue", "load", str(path)]).exit_code == 1
    assert "2026" not in CliRunner().invoke(cli, ["catalogue", "list"]).output


def test_a_draft_order_by_the_national_code_is_advised_on_every_item_it_covers(
    client: TestClient, services: Services
) -> None:
    """CDS Hooks reads a draft order's codes as the catalogue does: a national code
    stands for each item it covers."""
    from ehr_service.interactions.cds_hooks import _order_items

    assert client.get("/fhir/metadata").status_code == 200  # the app has loaded its edition
    catalogue = services.catalogues.active()
    assert catalogue is not None
    coding = {"system": SERVICE_ITEM_SYSTEM, "code": SUPERFICIAL}
    order = {"resourceType": "ServiceRequest", "code": {"coding": [coding]}}
    assert {item.code for item in _order_items(catalogue, order)} == COVERED
    unknown = {"code": {"coding": [{"system": SERVICE_ITEM_SYSTEM, "code": "999999999"}]}}
    assert _order_items(catalogue, unknown) == []
