"""``/fhir/OperationDefinition``: read-only, for any token, searched by _id, url, name and
code, served as shipped; and the checks the shipped files must pass at load."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ehr_service.app import create_app
from ehr_service.config import PROJECT_ROOT
from ehr_service.fhir.operations import DefinitionError, OperationDefinitions
from ehr_service.interactions.context import Services
from tests.helpers import FHIR_JSON, bearer, snapshot

SHIPPED = PROJECT_ROOT / "fhir_profiles" / "operations"
MERGE = "http://hl7.org/fhir/OperationDefinition/Patient-merge"


def test_any_token_reads_the_definitions_as_shipped(services: Services) -> None:
    app = create_app(services=services)
    with TestClient(app) as anonymous:
        assert anonymous.get("/fhir/OperationDefinition/Patient-merge").status_code == 401
    with TestClient(app, headers=bearer(services.settings, "user/Observation.r")) as reader:
        read = reader.get("/fhir/OperationDefinition/Patient-merge")  # no scope of its own
        assert read.status_code == 200
        assert read.content == (SHIPPED / "OperationDefinition-Patient-merge.json").read_bytes()
        assert reader.head("/fhir/OperationDefinition/Patient-merge").status_code == 200
        everything = reader.get("/fhir/OperationDefinition").json()
    assert everything["total"] == len(list(SHIPPED.glob("OperationDefinition-*.json")))
    assert {e["fullUrl"].rsplit("/", 1)[1] for e in everything["entry"]} >= {
        "export", "patient-export", "group-export", "Resource-validate", "inclusion-proof"
    }  # fmt: skip


def ids(response: Any) -> set[str]:
    assert response.status_code == 200, response.text
    return {e["resource"]["id"] for e in response.json().get("entry", [])
            if e["search"]["mode"] == "match"}  # fmt: skip


def test_search_by_url_name_code_and_id(client: TestClient) -> None:
    assert ids(client.get("/fhir/OperationDefinition", params={"url": MERGE})) == {"Patient-merge"}
    with_version = client.get("/fhir/OperationDefinition", params={"url": f"{MERGE}|5.0.0"})
    assert ids(with_version) == {"Patient-merge"}
    assert ids(client.get("/fhir/OperationDefinition?code=export")) == {
        "export", "patient-export", "group-export"
    }  # fmt: skip
    assert ids(client.get("/fhir/OperationDefinition?name=recog")) == {
        "recognizable-results", "recognition-decision", "recognition-stats"
    }  # fmt: skip
    assert ids(client.get("/fhir/OperationDefinition?name:exact=recog")) == set()
    assert ids(client.get("/fhir/OperationDefinition?name:exact=Merge")) == {"Patient-merge"}
    assert ids(client.get("/fhir/OperationDefinition?_id=export,Patient-match")) == {
        "export", "Patient-match"
    }  # fmt: skip
    both = client.get("/fhir/OperationDefinition?code=export&_id=group-export,export")
    assert ids(both) == {"export", "group-export"}  # AND of parameters, OR of values
    posted = client.post(
        "/fhir/OperationDefinition/_search",
        content="code=merge",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert ids(posted) == {"Patient-merge"}
    assert ids(client.get("/fhir/OperationDefinition?url=urn:nothing")) == set()


def test_any_other_search_parameter_is_a_400(client: TestClient) -> None:
    for query in ("kind=operation", "_count=5", "_sort=name", "code=export&_summary=count"):
        response = client.get(f"/fhir/OperationDefinition?{query}")
        assert response.status_code == 400, (query, response.text)
        assert "supported: _id, code, url, name" in response.text
    assert client.get("/fhir/OperationDefinition?_format=json&_pretty=true").status_code == 200


def test_an_unknown_definition_is_a_404(client: TestClient) -> None:
    response = client.get("/fhir/OperationDefinition/nothing-here")
    assert response.status_code == 404
    assert response.json()["resourceType"] == "OperationOutcome"
    assert client.get("/fhir/OperationDefinition/_history").status_code == 405


def test_every_write_of_a_definition_is_a_405(client: TestClient, services: Services) -> None:
    before = snapshot(services)
    body = json.loads((SHIPPED / "OperationDefinition-export.json").read_bytes())
    patch = {"Content-Type": "application/json-patch+json"}
    for response in (
        client.post("/fhir/OperationDefinition", json=body, headers=FHIR_JSON),
        client.put("/fhir/OperationDefinition/export", json=body, headers=FHIR_JSON),
        client.patch(
            "/fhir/OperationDefinition/export",
            json=[{"op": "remove", "path": "/code"}],
            headers=patch,
        ),
        client.delete("/fhir/OperationDefinition/export"),
        client.delete("/fhir/OperationDefinition?code=export"),
        client.post("/fhir/OperationDefinition/$validate", json=body, headers=FHIR_JSON),
    ):
        assert response.status_code == 405, response.text
        assert "read-only" in response.text
    bundle = {"resourceType": "Bundle", "type": "transaction",
              "entry": [{"resource": body, "request": {"method": "POST",
                                                       "url": "OperationDefinition"}}]}  # fmt: skip
    assert client.post("/fhir", json=bundle, headers=FHIR_JSON).status_code == 405
    assert snapshot(services) == before
    assert client.get("/fhir/OperationDefinition/export").json()["code"] == "export"


def test_definitions_in_a_batch(client: TestClient) -> None:
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "OperationDefinition/Patient-everything"}},
        {"request": {"method": "GET", "url": "OperationDefinition?code=match"}},
        {"request": {"method": "DELETE", "url": "OperationDefinition/Patient-everything"}},
    ]}  # fmt: skip
    entries = client.post("/fhir", json=bundle, headers=FHIR_JSON).json()["entry"]
    assert [e["response"]["status"][:3] for e in entries] == ["200", "200", "405"]
    assert entries[0]["resource"]["url"].endswith("/Patient-everything")
    assert entries[1]["resource"]["total"] == 1


# -- the checks at load -----------------------------------------------------------------
def write(directory: Path, definition: dict[str, Any], name: str | None = None) -> None:
    folder = directory / "operations"
    folder.mkdir(exist_ok=True)
    bindings = PROJECT_ROOT / "fhir_profiles" / "required-bindings.json"
    (directory / bindings.name).write_bytes(bindings.read_bytes())
    path = folder / (name or f"OperationDefinition-{definition['id']}.json")
    path.write_text(json.dumps(definition))


def valid(definition_id: str = "x", **fields: Any) -> dict[str, Any]:
    return {
        "resourceType": "OperationDefinition", "id": definition_id,
        "url": f"urn:test:{definition_id}", "name": "X", "status": "active",
        "kind": "operation", "code": "x", "system": True, "type": False, "instance": False,
        "parameter": [{"name": "a", "use": "in", "min": 0, "max": "1", "type": "string"}],
        **fields,
    }  # fmt: skip


def test_the_shipped_definitions_load() -> None:
    loaded = OperationDefinitions.load(PROJECT_ROOT / "fhir_profiles")
    assert len(loaded.all) >= 17
    assert loaded.find(f"{MERGE}|5.0.0") is loaded.by_id["Patient-merge"]
    assert loaded.by_id["Resource-validate"].levels() == ("type", "instance")


@pytest.mark.parametrize(
    ("definition", "name", "message"),
    [
        (valid(), "OperationDefinition-y.json", "its id is 'x'"),
        (valid(code=None), None, "not a valid R4 OperationDefinition"),
        (valid(status="nonsense"), None, "not a valid R4 OperationDefinition"),
        (valid(system=False), None, "invoked at no level"),
        (valid(system=False, type=True), None, "names its types"),
        (valid(resource=["Nothing"]), None, "Nothing"),
        (valid(parameter=[{"name": "a", "use": "in", "min": 0, "max": "1"}]), None,
         "a type or parts"),
        (valid(parameter=[{"name": "a", "use": "in", "min": 0, "max": "1", "type": "integer",
                           "searchType": "token"}]), None, "searchType"),
        (valid(parameter=[{"name": "a", "use": "in", "min": 0, "max": "1", "type": "string",
                           "targetProfile": ["urn:x"]}]), None, "targetProfile"),
    ],
)  # fmt: skip
def test_a_broken_definition_is_refused_naming_its_file(
    tmp_path: Path, definition: dict[str, Any], name: str | None, message: str
) -> None:
    write(tmp_path, {k: v for k, v in definition.items() if v is not None}, name)
    with pytest.raises(DefinitionError, match=message):
        OperationDefinitions.load(tmp_path)


def test_two_definitions_with_one_url_are_refused(tmp_path: Path) -> None:
    write(tmp_path, valid("a"))
    write(tmp_path, {**valid("b"), "url": "urn:test:a"})
    with pytest.raises(DefinitionError, match=r"urn:test:a is OperationDefinition-a\.json's too"):
        OperationDefinitions.load(tmp_path)
