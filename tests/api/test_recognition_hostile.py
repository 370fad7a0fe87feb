"""Regression tests from the review of mutual recognition: other residents' orders,
wrongly typed parameters, date overflow, the mark kept true, statistics counted
once, and $validate parameters."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from ehr_service.interactions.context import Services
from tests.helpers import FHIR_JSON, bearer, lab, organization, parameters

MARK = "urn:ehr-service:recognition-mark"


def _order(client: TestClient, pid: str, *codings: dict[str, str]) -> str:
    body = {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "subject": {"reference": f"Patient/{pid}"},
        "code": {"coding": list(codings)},
    }
    return str(client.post("/fhir/ServiceRequest", json=body, headers=FHIR_JSON).json()["id"])


GLUCOSE = {"system": "http://loinc.org", "code": "2345-7"}


def test_another_residents_order_is_not_used(
    client: TestClient, record: dict[str, str], services: Services
) -> None:
    pid = record["patient"]
    other = client.post(
        "/fhir/Patient", json={"resourceType": "Patient"}, headers=FHIR_JSON
    ).json()["id"]
    theirs = _order(client, other, GLUCOSE)
    body = parameters(
        {"name": "serviceRequest", "valueReference": {"reference": f"ServiceRequest/{theirs}"}}
    )
    staff = client.post(f"/fhir/Patient/{pid}/$recognizable-results", json=body, headers=FHIR_JSON)
    unknown = client.post(
        f"/fhir/Patient/{pid}/$recognizable-results",
        headers=FHIR_JSON,
        json=parameters(
            {"name": "serviceRequest", "valueReference": {"reference": "ServiceRequest/nope"}}
        ),
    )
    assert staff.status_code == unknown.status_code == 422  # one answer: no probing
    token = bearer(services.settings, "patient/*.rs", patient=pid)
    mine = client.post(
        f"/fhir/Patient/{pid}/$recognizable-results", json=body, headers={**FHIR_JSON, **token}
    )
    assert mine.status_code == 422


@pytest.mark.parametrize(
    "parts",
    [
        [
            {"name": "item", "valueCode": "LAB-GLU"},
            {"name": "serviceRequest", "valueReference": "x"},
        ],
        [
            {"name": "item", "valueCode": "LAB-GLU"},
            {"name": "serviceRequest", "valueReference": [1]},
        ],
        [{"name": "item", "valueCode": "LAB-GLU"}, {"name": "requester", "valueReference": "x"}],
        [{"name": "item", "valueCode": "LAB-GLU"}, {"name": "asOf", "valueDate": 5}],
        [{"name": "item", "valueCode": 5}],
        [{"name": "item", "valueCoding": "x"}],
    ],
)
def test_wrongly_typed_parameters_are_400(
    client: TestClient, record: dict[str, str], parts: list[dict[str, Any]]
) -> None:
    pid = record["patient"]
    for operation in ("$recognizable-results", "$recognition-decision"):
        response = client.post(
            f"/fhir/Patient/{pid}/{operation}", json=parameters(*parts), headers=FHIR_JSON
        )
        assert response.status_code == 400, (operation, response.text)


@pytest.mark.parametrize(
    "extra",
    [
        [{"name": "decision", "valueCode": "accepted"}, {"name": "result", "valueReference": "x"}],
        [
            {"name": "decision", "valueCode": "retest"},
            {"name": "reason", "valueCode": ["emergency"]},
        ],
        [
            {"name": "decision", "valueCode": "retest"},
            {"name": "reason", "valueCoding": "emergency"},
        ],
        [
            {"name": "decision", "valueCode": "retest"},
            {"name": "reason", "valueCoding": {"code": {"x": 1}}},
        ],
        [
            {"name": "decision", "valueCode": "retest"},
            {"name": "reason", "valueCode": "other"},
            {"name": "reasonText", "valueString": ["x"]},
        ],
    ],
)
def test_wrongly_typed_decisions_are_refused(
    client: TestClient, record: dict[str, str], extra: list[dict[str, Any]]
) -> None:
    body = parameters({"name": "item", "valueCode": "LAB-GLU"}, *extra)
    response = client.post(
        f"/fhir/Patient/{record['patient']}/$recognition-decision", json=body, headers=FHIR_JSON
    )
    assert response.status_code in {400, 422}, response.text


def test_dates_at_the_end_of_the_calendar(client: TestClient, record: dict[str, str]) -> None:
    pid = record["patient"]
    client.post("/fhir/Observation", json=lab(pid, "2345-7", "9999-12-31", "h1"), headers=FHIR_JSON)
    response = client.post(
        f"/fhir/Patient/{pid}/$recognizable-results",
        headers=FHIR_JSON,
        json=parameters(
            {"name": "item", "valueCode": "LAB-GLU"}, {"name": "asOf", "valueDate": "9999-12-31"}
        ),
    )
    assert response.status_code == 200, response.text


def _marks(client: TestClient, resource: str) -> list[str]:
    meta = client.get(f"/fhir/{resource}").json()["meta"]
    return [t["code"] for t in meta.get("tag", []) if t["system"] == MARK]


def test_the_mark_is_kept_true(client: TestClient, record: dict[str, str]) -> None:
    pid = record["patient"]
    # only the server sets it, on any type
    procedure = {
        "resourceType": "Procedure",
        "status": "completed",
        "subject": {"reference": f"Patient/{pid}"},
        "meta": {"tag": [{"system": MARK, "code": "川渝HR"}]},
    }
    created = client.post("/fhir/Procedure", json=procedure, headers=FHIR_JSON).json()
    assert "tag" not in created["meta"]
    # the institution's quality control is withdrawn: its results lose the mark
    glucose = f"Observation/{record['glucose']}"
    assert _marks(client, glucose) == ["川渝HR"]
    failed = organization("h1", passed=False)
    assert client.put("/fhir/Organization/h1", json=failed, headers=FHIR_JSON).status_code == 200
    assert _marks(client, glucose) == []
    assert client.get(f"/fhir/{glucose}/_history").json()["total"] == 2
    # ... and h2 passing later gives its results the mark
    assert _marks(client, f"Observation/{record['potassium_h2']}") == []
    client.put("/fhir/Organization/h2", json=organization("h2"), headers=FHIR_JSON)
    assert _marks(client, f"Observation/{record['potassium_h2']}") == ["川渝HR"]
    # a transaction writing the institution after its result
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "request": {"method": "PUT", "url": "Organization/h7"},
                "resource": organization("h7"),
            },
            {
                "request": {"method": "POST", "url": "Observation"},
                "resource": lab(pid, "2345-7", "2026-03-03", "h7"),
            },
        ],
    }
    response = client.post("/fhir", json=bundle, headers=FHIR_JSON)
    assert response.status_code == 200, response.text
    location = response.json()["entry"][1]["response"]["location"].split("/_history")[0]
    assert _marks(client, location) == ["川渝HR"]


def test_statistics_count_once(
    client: TestClient, record: dict[str, str], services: Services
) -> None:
    pid = record["patient"]
    ask = parameters(
        {"name": "item", "valueCode": "LAB-GLU"}, {"name": "asOf", "valueDate": "2026-03-15"}
    )
    token = bearer(services.settings, "patient/*.rs", patient=pid)
    for headers in (FHIR_JSON, FHIR_JSON, {**FHIR_JSON, **token}):
        assert (
            client.post(
                f"/fhir/Patient/{pid}/$recognizable-results", json=ask, headers=headers
            ).status_code
            == 200
        )
    order = _order(client, pid, GLUCOSE, {"system": "urn:hospital:local", "code": "GLU01"})
    decide = parameters(
        {"name": "serviceRequest", "valueReference": {"reference": f"ServiceRequest/{order}"}},
        {"name": "asOf", "valueDate": "2026-03-15"},
        {"name": "decision", "valueCode": "accepted"},
        {"name": "result", "valueReference": {"reference": f"Observation/{record['glucose']}"}},
    )
    first = client.post(
        f"/fhir/Patient/{pid}/$recognition-decision", json=decide, headers=FHIR_JSON
    )
    assert first.status_code == 201, first.text  # a local code beside the LOINC one is fine
    again = client.post(
        f"/fhir/Patient/{pid}/$recognition-decision", json=decide, headers=FHIR_JSON
    )
    assert again.status_code == 409
    stats = client.get("/fhir/$recognition-stats", params={"groupBy": "item"}).json()
    (group,) = [p for p in stats["parameter"] if p["name"] == "group"]
    figures = {p["name"]: p.get("valueInteger") for p in group["part"]}
    assert figures["offered"] == 1 and figures["accepted"] == 1
    # statistics periods are days in China Standard Time, "to" inclusive
    day = client.get("/fhir/$recognition-stats", params={"from": "2020-01-01", "to": "2099-12-31"})
    assert day.status_code == 200


def test_long_region_codes_do_not_break_statistics(
    client: TestClient, record: dict[str, str]
) -> None:
    org = organization("h8")
    org["extension"][0]["valueCode"] = "r" * 80
    client.put("/fhir/Organization/h8", json=org, headers=FHIR_JSON)
    pid = record["patient"]
    client.post("/fhir/Observation", json=lab(pid, "2345-7", "2026-03-10", "h8"), headers=FHIR_JSON)
    response = client.post(
        f"/fhir/Patient/{pid}/$recognizable-results",
        headers=FHIR_JSON,
        json=parameters(
            {"name": "item", "valueCode": "LAB-GLU"}, {"name": "asOf", "valueDate": "2026-03-15"}
        ),
    )
    assert response.status_code == 200, response.text


def test_validate_parameters_of_the_wrong_type(client: TestClient) -> None:
    resource = lab("p1", "2345-7", "2026-03-01", "h1")
    for profile in ([{"x": 1}], 5):
        body = parameters(
            {"name": "resource", "resource": resource}, {"name": "profile", "valueUri": profile}
        )
        assert (
            client.post("/fhir/Observation/$validate", json=body, headers=FHIR_JSON).status_code
            == 400
        )
    canonical = parameters(
        {"name": "resource", "resource": resource},
        {
            "name": "profile",
            "valueCanonical": "urn:ehr-service:StructureDefinition/recognized-lab-observation",
        },
    )
    assert (
        client.post("/fhir/Observation/$validate", json=canonical, headers=FHIR_JSON).status_code
        == 200
    )
    odd = resource | {"code": {"coding": 5}}
    response = client.post(
        "/fhir/Observation/$validate",
        json=odd,
        headers=FHIR_JSON,
        params={"profile": "urn:ehr-service:StructureDefinition/recognized-lab-observation"},
    )
    assert response.status_code == 200
