"""The committed OpenAPI document matches the app."""

from __future__ import annotations

from pathlib import Path

import orjson
from fastapi.testclient import TestClient
from openapi_spec_validator import validate

from ehr_service.api.openapi_export import openapi_bytes
from ehr_service.app import create_app
from ehr_service.config import PROJECT_ROOT, Settings

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
