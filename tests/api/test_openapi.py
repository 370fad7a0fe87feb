"""The committed OpenAPI document matches the app."""

from __future__ import annotations

from pathlib import Path

import orjson
from fastapi.testclient import TestClient
from openapi_spec_validator import validate

from ehr_service.api.openapi_export import openapi_bytes
from ehr_service.app import create_app
from ehr_service.config import PROJECT_ROOT, Settings
from tests.helpers import FHIR_JSON

COMMITTED = PROJECT_ROOT / "openapi" / "openapi.json"


def test_openapi_document_is_current(tmp_path: Path) -> None:
    app = create_app(
        Settings(database_url=f"sqlite:///{tmp_path / 'x.sqlite3'}", data_dir=tmp_path)
    )
    assert COMMITTED.read_bytes() == openapi_bytes(app), (
        "openapi/openapi.json is stale: run `make openapi`"
    )


def test_openapi_documents_fhir_errors(tmp_path: Path) -> None:
    app = create_app(
        Settings(database_url=f"sqlite:///{tmp_path / 'x.sqlite3'}", data_dir=tmp_path)
    )
    document = app.openapi()
    read = document["paths"]["/fhir/{resource_type}/{resource_id}"]["get"]
    assert {"200", "404", "410", "406", "500"} <= set(read["responses"])
    assert "422" not in read["responses"]
    assert "application/fhir+json" in read["responses"]["404"]["content"]


def test_the_committed_and_the_served_documents_are_valid_openapi(client: TestClient) -> None:
    """openapi-spec-validator (the OpenAPI 3.1 rules: unique parameters, valid
    schemas and references) over the file and over what /openapi.json serves."""
    validate(orjson.loads(COMMITTED.read_bytes()))
    served = client.get("/openapi.json")
    assert served.status_code == 200
    validate(served.json())


ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}
CARD = {"resourceType": "Parameters", "parameter": [{"name": "cardId", "valueString": "AB" * 32}]}


def test_an_operation_on_a_deleted_instance_is_a_documented_410(client: TestClient) -> None:
    """As a read of a deleted resource: 410 Gone, and the route says it may be."""
    document = client.get("/openapi.json").json()["paths"]
    patient = _created(client, {"resourceType": "Patient"})
    group = _created(client, {"resourceType": "Group", "type": "person", "actual": True})
    value_set = _created(client, {"resourceType": "ValueSet", "status": "active",
                                  "url": "urn:example:gone"})  # fmt: skip
    calls = [
        ("post", "Patient", patient, "$recognizable-results"),
        ("post", "Patient", patient, "$recognition-decision"),
        ("post", "Patient", patient, "$bind-health-card"),
        ("get", "Group", group, "$export"),
        ("get", "ValueSet", value_set, "$expand"),
    ]
    for method, resource_type, rid, operation in calls:
        path = f"/fhir/{resource_type}/{rid}/{operation}"
        body = CARD if operation == "$bind-health-card" else {"resourceType": "Parameters"}
        answer = client.request(method, path, json=body if method == "post" else None,
                                headers=ASYNC)  # fmt: skip
        assert answer.status_code == 410, (path, answer.text[:300])
        assert answer.json()["issue"][0]["code"] == "deleted", path
        template = path.replace(rid, "{resource_id}")
        assert "410" in document[template][method]["responses"], template


def _created(client: TestClient, resource: dict[str, object]) -> str:
    made = client.post(f"/fhir/{resource['resourceType']}", json=resource, headers=FHIR_JSON)
    assert made.status_code == 201, made.text[:300]
    rid = str(made.json()["id"])
    assert client.delete(f"/fhir/{resource['resourceType']}/{rid}").status_code in {200, 204}
    return rid
