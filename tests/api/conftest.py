"""Fixtures shared by the API tests of mutual recognition."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.helpers import FHIR_JSON, lab, organization


@pytest.fixture
def record(client: TestClient) -> dict[str, str]:
    for org in (organization("h1"), organization("h2", passed=False)):
        assert (
            client.put(f"/fhir/Organization/{org['id']}", json=org, headers=FHIR_JSON).status_code
            == 201
        )
    pid = client.post("/fhir/Patient", json={"resourceType": "Patient", "gender": "male"},
                      headers=FHIR_JSON).json()["id"]  # fmt: skip
    ids = {"patient": pid}
    for name, body in {
        "glucose": lab(pid, "2345-7", "2026-03-01", "h1"),
        "glucose_old": lab(pid, "2345-7", "2026-02-20", "h1"),
        "glucose_prelim": lab(pid, "2345-7", "2026-03-02", "h1", status="preliminary"),
        "potassium_h2": lab(pid, "2823-3", "2026-03-12", "h2"),
        "potassium_h1": lab(pid, "2823-3", "2026-02-01", "h1"),
        "other": lab(pid, "99999-9", "2026-03-01", "h1"),
    }.items():
        response = client.post("/fhir/Observation", json=body, headers=FHIR_JSON)
        assert response.status_code == 201, response.text
        ids[name] = response.json()["id"]
    return ids
