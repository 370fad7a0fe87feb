"""Institution and practitioner master data (Chongqing core IG draft alignment): the
unified social credit code and its GB 32100-2015 check character, the practising
licence, WS 218 type, grade and district, the practising-certificate number, known
regions only; on every write path, through the FHIR API and the command line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from ehr_service.cli import app as cli
from ehr_service.interactions.context import Services
from ehr_service.recognition.institutions import REGION_URL
from tests.api.test_cli_refusals import _add_partner
from tests.helpers import FHIR_JSON, snapshot

IG = "http://fhir.cq.hc"
TYPES = f"{IG}/CodeSystem/identifierType-code-system"
PROFILE = "urn:ehr-service:StructureDefinition/recognition-institution"
DOCTOR = "urn:ehr-service:StructureDefinition/recognition-practitioner"
CERTIFICATE = "urn:ehr-service:physician-practising-certificate"
# The Chongqing health commission's code, as the IG's example gives it; computed by
# hand from GB 32100-2015 (weights 3^(i-1) mod 31, 31 - sum mod 31) it ends in W.
USCC = "11500000MB1670604W"

Run = Callable[..., tuple[int, str]]


def _institution(uscc: str = USCC, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Organization",
        "meta": {"profile": [PROFILE]},
        "name": "重庆市某医院",
        "identifier": [
            {"use": "official", "type": {"coding": [{"system": TYPES, "code": "USCC"}]},
             "value": uscc},
            {"use": "official", "type": {"coding": [{"system": TYPES, "code": "MIPLRN"}]},
             "value": "PDY00001-150010317A1001"},
        ],
        "extension": [
            {"url": f"{IG}/StructureDefinition/hc-mdm-healthcareinstitutionstype",
             "valueCoding": {"system": f"{IG}/CodeSystem/healthcareinstitutionstype-code-system",
                             "code": "A100"}},
            {"url": f"{IG}/StructureDefinition/hc-mdm-hospitallevel",
             "valueCoding": {"system": f"{IG}/CodeSystem/cn-hospitalleve-code-system",
                             "code": "2"}},
            {"url": f"{IG}/StructureDefinition/hc-mdm-administrativedivision",
             "valueCoding": {"system": f"{IG}/CodeSystem/cq-administrativedivision-code-system",
                             "code": "500103"}},
            {"url": REGION_URL, "valueCode": "chongqing"},
        ],
    }  # fmt: skip
    return body | changes


def _post(client: TestClient, body: dict[str, Any]) -> Any:
    return client.post(f"/fhir/{body['resourceType']}", json=body, headers=FHIR_JSON)


def _refused(response: Any, expression: str) -> None:
    assert response.status_code == 422, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"] == [expression]


def test_a_valid_institution_is_stored_and_found_by_its_code(client: TestClient) -> None:
    created = _post(client, _institution())
    assert created.status_code == 201, created.text
    found = client.get(f"/fhir/Organization?identifier={USCC}").json()
    assert [e["resource"]["id"] for e in found["entry"]] == [created.json()["id"]]
    typed = client.get(f"/fhir/Organization?identifier:of-type={TYPES}|USCC|{USCC}").json()
    assert typed["total"] == 1


@pytest.mark.parametrize(
    ("uscc", "why"),
    [
        (USCC[:17] + "X", "check character"),  # one character off
        ("11500000MB1670604", "18 characters"),
        ("11500000MB167O604W", "without I, O"),  # the letter O is not in the alphabet
        ("115000A0MB1670604W", "places 3 to 8"),
    ],
)
def test_a_bad_credit_code_is_refused_naming_the_element(
    client: TestClient, services: Services, uscc: str, why: str
) -> None:
    before = snapshot(services)
    response = _post(client, _institution(uscc))
    _refused(response, "Organization.identifier[0].value")
    assert why in response.json()["issue"][0]["diagnostics"]
    assert snapshot(services) == before


def test_an_update_with_a_bad_code_leaves_the_institution_as_it_was(
    client: TestClient, services: Services
) -> None:
    org = client.put("/fhir/Organization/h1", json=_institution(id="h1"), headers=FHIR_JSON)
    assert org.status_code == 201
    before = snapshot(services)
    bad = _institution("11500103MB1849823M", id="h1")  # the IG's other example ends in N
    _refused(client.put("/fhir/Organization/h1", json=bad, headers=FHIR_JSON),
             "Organization.identifier[0].value")  # fmt: skip
    assert snapshot(services) == before
    good = _institution("11500103MB1849823N", id="h1")
    assert client.put("/fhir/Organization/h1", json=good, headers=FHIR_JSON).status_code == 200


def test_type_grade_district_and_licence_are_checked(client: TestClient) -> None:
    for index, code in ((0, "a100"), (1, "15"), (2, "5001")):
        body = _institution()
        body["extension"][index]["valueCoding"]["code"] = code
        _refused(_post(client, body), f"Organization.extension[{index}].valueCoding.code")
    body = _institution()
    body["extension"][1]["valueCoding"]["system"] = "urn:other"
    _refused(_post(client, body), "Organization.extension[1]")
    body = _institution()
    body["identifier"][1]["value"] = "执业许可 001"
    _refused(_post(client, body), "Organization.identifier[1].value")


def test_the_profile_requires_licence_type_and_district(client: TestClient) -> None:
    body = _institution()
    body["identifier"] = body["identifier"][:1]
    response = _post(client, body)
    assert response.status_code == 422
    assert "miplrn" in response.json()["issue"][0]["diagnostics"]
    unclaimed = {k: v for k, v in body.items() if k != "meta"}
    assert _post(client, unclaimed).status_code == 201  # the checks still ran, and passed


def test_an_unknown_region_is_refused_by_the_api(client: TestClient, services: Services) -> None:
    before = snapshot(services)
    body = _institution()
    body["extension"][3]["valueCode"] = "mars"
    response = _post(client, body)
    _refused(response, "Organization.extension[3].valueCode")
    assert "chongqing" in response.json()["issue"][0]["diagnostics"]
    batch = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": body, "request": {"method": "POST", "url": "Organization"}}],
    }
    assert client.post("/fhir", json=batch, headers=FHIR_JSON).status_code == 422  # fmt: skip
    assert snapshot(services) == before
    body["extension"][3]["valueCode"] = "sichuan"  # the zone's other region
    assert _post(client, body).status_code == 201


def test_a_partners_region_is_known(
    client: TestClient, services: Services, database_url: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    body = _institution()
    body["extension"][3]["valueCode"] = "xizang"
    assert _post(client, body).status_code == 422
    monkeypatch.setenv("EHR_DATABASE_URL", database_url)
    monkeypatch.setenv("EHR_DATA_DIR", str(services.settings.data_dir))
    monkeypatch.setenv("EHR_ENVIRONMENT", "test")

    def run(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(cli, list(args))
        return result.exit_code, result.output

    _add_partner(run, tmp_path, region="xizang")
    assert _post(client, body).status_code == 201


def test_practitioner_certificate_numbers(client: TestClient, services: Services) -> None:
    def doctor(number: str) -> dict[str, Any]:
        return {"resourceType": "Practitioner", "name": [{"text": "张医生"}],
                "meta": {"profile": [DOCTOR]},
                "identifier": [{"system": CERTIFICATE, "value": number}]}  # fmt: skip

    assert _post(client, doctor("110500000012345")).status_code == 201
    before = snapshot(services)
    for bad in ("11050000001234", "1105000000123456", "11050000001234X"):
        _refused(_post(client, doctor(bad)), "Practitioner.identifier[0].value")
    assert snapshot(services) == before


def test_the_capability_statement_lists_the_profiles(client: TestClient) -> None:
    statement = client.get("/fhir/metadata").json()
    kinds = {r["type"]: r for r in statement["rest"][0]["resource"]}
    assert kinds["Organization"]["supportedProfile"] == [PROFILE]
    assert kinds["Practitioner"]["supportedProfile"] == [
        "urn:ehr-service:StructureDefinition/recognition-practitioner"
    ]
    for url in (PROFILE, "urn:ehr-service:StructureDefinition/recognition-practitioner"):
        assert client.get(f"/fhir/StructureDefinition?url={url}").status_code in (200, 404)


def test_the_cli_writes_and_shows_master_data(
    services: Services, database_url: str, monkeypatch: pytest.MonkeyPatch, client: TestClient
) -> None:
    monkeypatch.setenv("EHR_DATABASE_URL", database_url)
    monkeypatch.setenv("EHR_DATA_DIR", str(services.settings.data_dir))
    monkeypatch.setenv("EHR_ENVIRONMENT", "test")

    def run(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(cli, list(args))
        return result.exit_code, result.output

    base = ("institution", "add", "h5", "--name", "渝中医院", "--region", "chongqing")
    before = snapshot(services)
    code, out = run(*base, "--uscc", USCC[:17] + "X")
    assert code != 0 and "check character" in out
    assert snapshot(services) == before
    code, out = run(*base, "--uscc", USCC, "--licence", "PDY00001-150010317A1001",
                    "--type", "A100", "--grade", "2", "--district", "500103")  # fmt: skip
    assert code == 0, out
    stored = client.get("/fhir/Organization/h5").json()
    assert stored["meta"]["profile"] == [PROFILE]  # complete: the profile is claimed
    shown = run("institution", "show", "h5")[1]
    assert USCC in shown and "A100" in shown and "2 三级甲等" in shown and "500103" in shown
    code, out = run(*base, "--grade", "99")
    assert code != 0
    assert run(*base, "--level", "3A")[0] == 0  # the master data stays
    assert USCC in run("institution", "show", "h5")[1]
