"""FHIR Bulk Data export: kick-off, status, manifest, files, cancel, scopes, consent."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from ehr_service.interactions.context import Services
from tests.helpers import FHIR_JSON, bearer, id_identifier, make_id_number, observation, refusal

ASYNC = {"Prefer": "respond-async"}


def _load(client: TestClient) -> dict[str, Any]:
    number = make_id_number()
    ids: dict[str, Any] = {"number": number}
    ids["p1"] = client.post(
        "/fhir/Patient",
        json={"resourceType": "Patient", "identifier": [id_identifier(number)]},
        headers=FHIR_JSON,
    ).json()["id"]
    ids["p2"] = client.post(
        "/fhir/Patient", json={"resourceType": "Patient"}, headers=FHIR_JSON
    ).json()["id"]
    for pid in (ids["p1"], ids["p1"], ids["p2"]):
        client.post("/fhir/Observation", json=observation(f"Patient/{pid}"), headers=FHIR_JSON)
    client.post(
        "/fhir/Organization", json={"resourceType": "Organization", "name": "h"}, headers=FHIR_JSON
    )
    group = {
        "resourceType": "Group",
        "type": "person",
        "actual": True,
        "member": [{"entity": {"reference": f"Patient/{ids['p2']}"}}],
    }
    ids["group"] = client.post("/fhir/Group", json=group, headers=FHIR_JSON).json()["id"]
    return ids


def _export(
    client: TestClient, path: str, headers: dict[str, str] | None = None, **params: str
) -> dict[str, Any]:
    kickoff = client.get(path, params=params, headers={**ASYNC, **(headers or {})})
    assert kickoff.status_code == 202, kickoff.text
    status_url = kickoff.headers["Content-Location"]
    assert "/fhir/$export-status/" in status_url
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = client.get(status_url.replace("http://testserver", ""), headers=headers or {})
        if status.status_code == 200:
            manifest: dict[str, Any] = status.json()
            manifest["status_url"] = status_url
            return manifest
        assert status.status_code == 202 and "X-Progress" in status.headers
        time.sleep(0.05)
    raise AssertionError("the export did not finish")


def _lines(
    client: TestClient, url: str, headers: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    response = client.get(url.replace("http://testserver", ""), headers=headers or {})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/fhir+ndjson")
    return [orjson.loads(line) for line in response.content.splitlines() if line]


def test_system_export_with_manifest_and_files(client: TestClient, services: Services) -> None:
    ids = _load(client)
    manifest = _export(client, "/fhir/$export")
    assert manifest["requiresAccessToken"] is True and manifest["error"] == []
    counts = {o["type"]: o["count"] for o in manifest["output"]}
    assert counts["Patient"] == 2 and counts["Observation"] == 3 and counts["Organization"] == 1
    patients = _lines(client, next(o["url"] for o in manifest["output"] if o["type"] == "Patient"))
    assert len(patients) == 2
    # staff see the ID number; it is never in plaintext in the files at rest
    assert (
        id_identifier(ids["number"])
        in next(p for p in patients if p["id"] == ids["p1"])["identifier"]
    )
    export_dir = services.settings.data_dir / "exports"
    at_rest = [f.read_bytes() for f in export_dir.rglob("*.ndjson")]
    assert at_rest and all(ids["number"].encode() not in raw for raw in at_rest)
    # the files are sealed whole: no record is readable on disk
    assert all(b"resourceType" not in raw and ids["p1"].encode() not in raw for raw in at_rest)
    # _type and _since
    only = _export(client, "/fhir/$export", _type="Observation")
    assert [o["type"] for o in only["output"]] == ["Observation"]
    later = _export(client, "/fhir/$export", _since="2999-01-01T00:00:00Z")
    assert later["output"] == []


def test_patient_and_group_exports_are_records_only(client: TestClient) -> None:
    ids = _load(client)
    patients = _export(client, "/fhir/Patient/$export")
    assert "Organization" not in {o["type"] for o in patients["output"]}
    group = _export(client, f"/fhir/Group/{ids['group']}/$export")
    files = {o["type"]: _lines(client, o["url"]) for o in group["output"]}
    assert [p["id"] for p in files["Patient"]] == [ids["p2"]]
    assert [o["subject"]["reference"] for o in files["Observation"]] == [f"Patient/{ids['p2']}"]
    assert client.get("/fhir/Group/missing/$export", headers=ASYNC).status_code == 404


def test_kickoff_rules_and_access(client: TestClient, services: Services) -> None:
    ids = _load(client)
    assert client.get("/fhir/$export").status_code == 400  # no Prefer: respond-async
    assert client.get("/fhir/$export", params={"_type": "Nope"}, headers=ASYNC).status_code == 400
    assert (
        client.get("/fhir/$export", params={"_outputFormat": "text/csv"}, headers=ASYNC).status_code
        == 400
    )
    patient_token = bearer(services.settings, "patient/*.rs", patient=ids["p1"])
    assert client.get("/fhir/$export", headers={**ASYNC, **patient_token}).status_code == 403
    narrow = bearer(services.settings, "system/Observation.rs")
    response = client.get("/fhir/$export", params={"_type": "Patient"}, headers={**ASYNC, **narrow})
    assert response.status_code == 403
    own = _export(client, "/fhir/$export", headers=narrow)
    assert [o["type"] for o in own["output"]] == ["Observation"]  # what its scopes allow
    # another client sees neither the status nor the files
    other = bearer(services.settings, subject="other-system")
    status_path = own["status_url"].replace("http://testserver", "")
    assert client.get(status_path, headers=other).status_code == 404
    assert (
        client.get(
            own["output"][0]["url"].replace("http://testserver", ""), headers=other
        ).status_code
        == 404
    )
    # cancel: the job and its files are gone
    assert client.delete(status_path, headers=narrow).status_code == 202
    assert client.get(status_path, headers=narrow).status_code == 404
    assert client.get("/fhir/$export-file/nope/Patient.ndjson").status_code == 404


def test_refused_records_are_left_out(client: TestClient, services: Services) -> None:
    ids = _load(client)
    consent = refusal(ids["p1"], organization="Organization/h9")
    assert client.post("/fhir/Consent", json=consent, headers=FHIR_JSON).status_code == 201
    refused = bearer(services.settings, "system/*.rs", organization="Organization/h9")
    manifest = _export(client, "/fhir/Patient/$export", headers=refused)
    files = {o["type"]: _lines(client, o["url"], refused) for o in manifest["output"]}
    assert [p["id"] for p in files["Patient"]] == [ids["p2"]]
    assert all(o["subject"]["reference"] == f"Patient/{ids['p2']}" for o in files["Observation"])


def test_operator_export_command(
    client: TestClient, services: Services, database_url: str, tmp_path: Any, monkeypatch: Any
) -> None:
    from typer.testing import CliRunner

    from ehr_service.cli import app as cli

    ids = _load(client)
    monkeypatch.setenv("EHR_DATABASE_URL", database_url)
    monkeypatch.setenv("EHR_DATA_DIR", str(services.settings.data_dir))
    result = CliRunner().invoke(
        cli, ["export", "--out", str(tmp_path / "x"), "--type", "Patient", "--type", "Observation"]
    )
    assert result.exit_code == 0, result.output
    assert "Patient: 2" in result.output and "Observation: 3" in result.output
    text = (tmp_path / "x" / "Patient.ndjson").read_text()
    assert ids["number"] not in text  # masked unless asked
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == [
        "Observation.ndjson",
        "Patient.ndjson",
    ]


@pytest.mark.parametrize(
    "accept", ["application/fhir+ndjson", "application/ndjson", "*/*", "application/fhir+json"]
)
def test_downloads_accept_the_bulk_data_media_types(client: TestClient, accept: str) -> None:
    _load(client)
    manifest = _export(client, "/fhir/$export", _type="Patient")
    url = manifest["output"][0]["url"].replace("http://testserver", "")
    response = client.get(url, headers={"Accept": accept})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/fhir+ndjson")
    assert client.get(url, headers={"Accept": "text/html"}).status_code == 406


def test_pages_hold_each_resource_as_it_was_at_the_kick_off(
    client: TestClient, services: Services
) -> None:
    from ehr_service.fhir.primitives import utc_now
    from ehr_service.storage import bulk_export as store

    pid = client.post("/fhir/Patient", json={"resourceType": "Patient"}, headers=FHIR_JSON).json()[
        "id"
    ]

    def create() -> dict[str, Any]:
        response = client.post(
            "/fhir/Observation", json=observation(f"Patient/{pid}"), headers=FHIR_JSON
        )
        assert response.status_code == 201
        body: dict[str, Any] = response.json()
        time.sleep(0.002)
        return body

    early = [create(), create()]
    middle = utc_now()
    time.sleep(0.002)
    late = [create(), create()]
    kick_off = utc_now()
    time.sleep(0.002)
    # after the kick-off: one changed, one deleted, one created
    changed = early[0] | {"valueQuantity": {"value": 9.9, "unit": "mmol/L"}}
    assert client.put(f"/fhir/Observation/{changed['id']}", json=changed, headers=FHIR_JSON)
    assert client.delete(f"/fhir/Observation/{late[0]['id']}").status_code in (200, 204)
    create()

    def exported(since: Any) -> dict[str, dict[str, Any]]:
        with services.unit.read() as conn:
            rows = store.page(
                conn, "Observation", after=None, limit=100, since=since, until=kick_off,
                patients=None, compartment_only=True, refused_actors=(),
            )  # fmt: skip
        return {resource_id: orjson.loads(content) for resource_id, content in rows}

    everything = exported(None)
    assert set(everything) == {o["id"] for o in early + late}  # the deleted one too
    assert everything[changed["id"]]["meta"]["versionId"] == "1"
    assert everything[changed["id"]]["valueQuantity"]["value"] == 5.8
    assert everything[late[0]["id"]]["meta"]["versionId"] == "1"
    # _since: as the resources were at the kick-off (the one changed since was older)
    assert set(exported(middle)) == {o["id"] for o in late}
