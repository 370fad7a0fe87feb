"""Small helpers shared by the API tests."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from ehr_service.interactions.context import Services
from ehr_service.storage.tables import resource, resource_version

FHIR_JSON = {"Content-Type": "application/fhir+json"}


def patient(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Patient",
        "name": [{"family": "王", "given": ["芳"]}],
        "gender": "female",
        "birthDate": "1968-03-14",
    }
    body.update(fields)
    return body


def observation(patient_ref: str, value: float = 5.8) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
        "subject": {"reference": patient_ref},
        "valueQuantity": {"value": value, "unit": "mmol/L"},
    }


def snapshot(services: Services) -> tuple[list[Any], list[Any]]:
    """Every stored row, to prove a failed request changed nothing."""
    with services.database.read() as conn:
        current = conn.execute(
            sa.select(resource).order_by(resource.c.res_type, resource.c.res_id)
        ).all()
        versions = conn.execute(sa.select(resource_version).order_by(resource_version.c.seq)).all()
    return [tuple(r) for r in current], [tuple(r) for r in versions]


def issue_expressions(outcome: dict[str, Any]) -> list[str]:
    return [e for issue in outcome["issue"] for e in issue.get("expression", [])]
