"""The committed OpenAPI document matches the app."""

from __future__ import annotations

from pathlib import Path

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
