"""Required bindings on every write, the service's profiles, and $validate."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from ehr_service.interactions.context import Services
from tests.helpers import FHIR_JSON, id_identifier, make_id_number, snapshot

LAB_PROFILE = "urn:ehr-service:StructureDefinition/recognized-lab-observation"
PATIENT_PROFILE = "urn:ehr-service:StructureDefinition/resident-patient"
STUDY_PROFILE = "urn:ehr-service:StructureDefinition/recognized-imaging-study"
REPORT_PROFILE = "urn:ehr-service:StructureDefinition/recognized-imaging-report"


def lab_result(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "laboratory",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2026-03-01T09:00:00+08:00",
        "performer": [{"reference": "Organization/h1"}],
        "valueQuantity": {"value": 5.1, "unit": "mmol/L"},
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


def outcome(client: TestClient, path: str, body: Any = None, **params: str) -> list[dict[str, Any]]:
    if body is None:
        response = client.get(path, params=params)
    else:
        response = client.post(path, json=body, params=params, headers=FHIR_JSON)
    assert response.status_code == 200, response.text
    document = response.json()
    assert document["resourceType"] == "OperationOutcome"
    return [i for i in document["issue"] if i["severity"] in {"error", "fatal"}]


def test_required_binding_codes_are_checked_on_every_write(
    client: TestClient, services: Services
) -> None:
    before = snapshot(services)
    response = client.post(
        "/fhir/Observation", json=lab_result(status="finished-ish"), headers=FHIR_JSON
    )
    assert response.status_code == 400
    issue = response.json()["issue"][0]
    assert issue["code"] == "code-invalid" and issue["expression"] == ["Observation.status"]
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "request": {"method": "POST", "url": "Patient"},
                "resource": {
                    "resourceType": "Patient",
                    "gender": "female",
                    "link": [{"other": {"reference": "Patient/x"}, "type": "sibling"}],
                },
            }
        ],
    }
    response = client.post("/fhir", json=bundle, headers=FHIR_JSON)
    assert response.status_code == 400
    assert "Patient.link[0].type" in response.text
    assert snapshot(services) == before
    # nested: every element along the path
    task = {
        "resourceType": "Task",
        "status": "completed",
        "intent": "order",
        "restriction": {"repetitions": 1},
        "input": [{"type": {"text": "x"}, "valueString": "y"}],
    }
    assert client.post("/fhir/Task", json=task, headers=FHIR_JSON).status_code == 201
    task["intent"] = "whenever"
    assert client.post("/fhir/Task", json=task, headers=FHIR_JSON).status_code == 400


def test_validate_type_level_with_and_without_profile(client: TestClient) -> None:
    assert outcome(client, "/fhir/Observation/$validate", lab_result()) == []
    bad = outcome(client, "/fhir/Observation/$validate", lab_result(status="nope"))
    assert [i["expression"] for i in bad] == [["Observation.status"]]
    # the profile: a bare observation misses what recognition needs
    bare = lab_result(
        category=None,
        performer=None,
        effectiveDateTime=None,
        status="preliminary",
        code={"coding": [{"system": "http://loinc.org", "code": "99999-9"}]},
    )
    issues = outcome(
        client,
        "/fhir/Observation/$validate",
        {
            "resourceType": "Parameters",
            "parameter": [
                {"name": "resource", "resource": bare},
                {"name": "profile", "valueUri": LAB_PROFILE},
            ],
        },
    )
    text = " ".join(i["diagnostics"] for i in issues)
    assert "Observation.category:laboratory needs at least 1" in text
    assert "Observation.performer needs at least 1" in text
    assert "Observation.effective[x] needs at least 1" in text
    assert "Observation.status is not in the required value set" in text
    assert "Observation.code is not in the required value set" in text
    assert outcome(client, "/fhir/Observation/$validate", lab_result(), profile=LAB_PROFILE) == []
    # the profile named by the resource itself
    claimed = lab_result(meta={"profile": [LAB_PROFILE]}, performer=None)
    assert len(outcome(client, "/fhir/Observation/$validate", claimed)) == 1
    # wrong type in the URL, an unknown profile (a warning), a bad mode
    mismatch = client.post("/fhir/Patient/$validate", json=lab_result(), headers=FHIR_JSON)
    assert mismatch.status_code == 400 and "does not match" in mismatch.text
    assert client.post("/fhir/Patient/$validate", json=[1], headers=FHIR_JSON).status_code == 400
    response = client.post(
        "/fhir/Observation/$validate",
        json=lab_result(),
        params={"profile": "urn:x:unknown"},
        headers=FHIR_JSON,
    )
    assert response.json()["issue"][0]["severity"] == "warning"
    assert (
        client.post(
            "/fhir/Observation/$validate",
            json=lab_result(),
            params={"mode": "x"},
            headers=FHIR_JSON,
        ).status_code
        == 400
    )
    assert (
        client.post("/fhir/NotAType/$validate", json=lab_result(), headers=FHIR_JSON).status_code
        == 404
    )


def test_writes_claiming_a_profile_are_held_to_it(client: TestClient, services: Services) -> None:
    before = snapshot(services)
    claimed = lab_result(meta={"profile": [LAB_PROFILE]}, valueQuantity=None)
    response = client.post("/fhir/Observation", json=claimed, headers=FHIR_JSON)
    assert response.status_code == 422, response.text
    assert "value[x] needs at least 1" in response.text
    assert snapshot(services) == before
    good = client.post(
        "/fhir/Observation", json=lab_result(meta={"profile": [LAB_PROFILE]}), headers=FHIR_JSON
    )
    assert good.status_code == 201
    # the stored instance, checked again against a profile
    stored = good.json()["id"]
    assert outcome(client, f"/fhir/Observation/{stored}/$validate", profile=LAB_PROFILE) == []
    plain = client.post("/fhir/Observation", json=lab_result(performer=None), headers=FHIR_JSON)
    assert plain.status_code == 201  # no claim: no profile check
    issues = outcome(
        client, f"/fhir/Observation/{plain.json()['id']}/$validate", profile=LAB_PROFILE
    )
    assert [i["expression"] for i in issues] == [["Observation.performer"]]
    # mode=delete: the resource must exist
    assert (
        outcome(
            client,
            f"/fhir/Observation/{stored}/$validate",
            {"resourceType": "Parameters", "parameter": [{"name": "mode", "valueCode": "delete"}]},
        )
        == []
    )
    assert client.get("/fhir/Observation/missing/$validate").status_code == 404


def test_resident_patient_and_imaging_profiles(client: TestClient) -> None:
    number = make_id_number()
    patient = {
        "resourceType": "Patient",
        "name": [{"family": "王"}],
        "gender": "male",
        "birthDate": "1990-03-07",
        "identifier": [id_identifier(number), id_identifier(make_id_number(sequence="135"))],
    }
    issues = outcome(client, "/fhir/Patient/$validate", patient, profile=PATIENT_PROFILE)
    assert "Patient.identifier:idNumber allows at most 1" in issues[0]["diagnostics"]
    patient["identifier"] = [id_identifier(number)]
    del patient["birthDate"]
    issues = outcome(client, "/fhir/Patient/$validate", patient, profile=PATIENT_PROFILE)
    assert [i["expression"] for i in issues] == [["Patient.birthDate"]]
    study = {
        "resourceType": "ImagingStudy",
        "status": "registered",
        "subject": {"reference": "Group/g1"},
        "started": "2026-03-01",
        "modality": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "CT"}],
        "series": [
            {
                "uid": "1.2.3",
                "modality": {
                    "system": "http://dicom.nema.org/resources/ontology/DCM",
                    "code": "CT",
                },
            },
            {"uid": "1.2.4", "modality": {"code": "CT"}, "bodySite": {"code": "51185008"}},
        ],
    }
    issues = outcome(client, "/fhir/ImagingStudy/$validate", study, profile=STUDY_PROFILE)
    by_place = {i["expression"][0]: i["diagnostics"] for i in issues}
    assert 'must be "available"' in by_place["ImagingStudy.status"]
    assert "must refer to Patient" in by_place["ImagingStudy.subject"]
    assert "ImagingStudy.series[0].bodySite" in by_place  # per series
    assert "ImagingStudy.series[1].bodySite" not in by_place
    report = {
        "resourceType": "DiagnosticReport",
        "status": "final",
        "category": [
            {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD"}]}
        ],
        "code": {"coding": [{"system": "urn:ehr-service:local:imaging", "code": "CT-CHEST"}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2026-03-01",
        "performer": [{"reference": "Organization/h1"}],
        "conclusion": "未见异常",
    }
    assert outcome(client, "/fhir/DiagnosticReport/$validate", report, profile=REPORT_PROFILE) == []
    report["code"] = {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]}  # a lab item
    issues = outcome(client, "/fhir/DiagnosticReport/$validate", report, profile=REPORT_PROFILE)
    assert [i["expression"] for i in issues] == [["DiagnosticReport.code"]]
