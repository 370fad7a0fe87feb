"""Bulk Data v2 kick-off: POST with a Parameters body, ``patient``, lenient and
strict handling of what the server does not offer, and the job's rules on the
new paths (owner only, cancel, audit)."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ehr_service.interactions.context import Services
from tests.api.bulk_helpers import (
    ASYNC,
    GLUCOSE,
    LENIENT,
    LOINC,
    body,
    errors,
    files,
    get_export,
    ids_of,
    lines,
    post_export,
    records,
    wait,
)
from tests.helpers import FHIR_JSON, audit_get, bearer, refusal

POST = {**ASYNC, **FHIR_JSON}


def test_a_post_kickoff_exports_what_the_get_one_does(client: TestClient) -> None:
    ids = records(client)
    query: dict[str, Any] = {
        "_type": "Observation,Patient",
        "_typeFilter": f"Observation?code={LOINC}|{GLUCOSE}",
        "_elements": "Observation.code,Observation.subject",
        "_since": "2000-01-01T00:00:00Z",
    }
    paths = ("/fhir/$export", "/fhir/Patient/$export", f"/fhir/Group/{ids['group']}/$export")
    for path, patients in zip(paths, (3, 3, 2), strict=True):
        by_get = get_export(client, path, **query)
        by_post = post_export(client, path, body(**query))
        exported = files(client, by_post)
        assert exported == files(client, by_get)
        assert len(exported["Observation"]) == 3 * patients
        assert len(exported["Patient"]) == patients
        assert [(o["type"], o["count"]) for o in by_post["output"]] == [
            (o["type"], o["count"]) for o in by_get["output"]
        ]
        assert by_post["request"] == f"http://testserver{path}"  # POST: without parameters
    # repeated parts, and the URL's parameters beside the body's, mean the same
    split = body(_type=["Observation", "Patient"], _typeFilter=query["_typeFilter"])
    repeated = post_export(client, "/fhir/$export", split)
    beside = wait(
        client,
        client.post(
            "/fhir/$export?_type=Observation,Patient",
            json=body(_typeFilter=query["_typeFilter"]),
            headers=POST,
        ),
    )
    assert files(client, repeated) == files(client, beside)
    assert len(files(client, repeated)["Observation"]) == 9


def test_bad_post_bodies_are_400s(client: TestClient) -> None:
    records(client)
    bad: list[tuple[Any, str]] = [
        ({"resourceType": "Patient"}, "Parameters"),
        ({"resourceType": "Parameters", "parameter": {"name": "_type"}}, "list"),
        (
            {"resourceType": "Parameters", "parameter": [{"name": "patient", "valueString": "x"}]},
            "valueReference",
        ),
        (
            {"resourceType": "Parameters", "parameter": [{"name": "_since", "valueBoolean": True}]},
            "valueInstant",
        ),
        (body(_since="yesterday"), "_since"),
    ]
    for document, says in bad:
        response = client.post("/fhir/Patient/$export", json=document, headers=POST)
        assert response.status_code == 400, (document, response.text)
        assert says in response.text
    both = client.post("/fhir/$export?_type=Patient", json=body(_type="Condition"), headers=POST)
    assert both.status_code == 400 and "both in the URL and in the Parameters body" in both.text
    not_json = client.post("/fhir/$export", content=b"{", headers=POST)
    assert not_json.status_code == 400
    plain = client.post("/fhir/$export", content=b"_type=Patient", headers={
        **ASYNC, "Content-Type": "text/plain"})  # fmt: skip
    assert plain.status_code == 415
    no_prefer = client.post("/fhir/$export", json=body(_type="Patient"), headers=FHIR_JSON)
    assert no_prefer.status_code == 400


def test_patient_limits_patient_and_group_exports(client: TestClient, services: Services) -> None:
    ids = records(client)
    first, second, third = ids["patients"]
    chosen = post_export(
        client, "/fhir/Patient/$export", body(patient=[first, third], _type="Patient,Observation")
    )
    out = files(client, chosen)
    assert ids_of(out["Patient"]) == {first, third}
    assert {o["subject"]["reference"] for o in out["Observation"]} == {
        f"Patient/{first}",
        f"Patient/{third}",
    }
    by_get = get_export(client, "/fhir/Patient/$export", patient=f"Patient/{first}")
    assert {c["subject"]["reference"] for c in files(client, by_get)["Condition"]} == {
        f"Patient/{first}"
    }
    group = f"/fhir/Group/{ids['group']}/$export"
    member = files(client, post_export(client, group, body(patient=[second])))
    assert ids_of(member["Patient"]) == {second}
    assert len(member["Observation"]) == 6 and len(member["Condition"]) == 1
    # not a member, not on the server, at the system level: 400s
    for path, named in (
        (group, third),
        ("/fhir/Patient/$export", "nobody"),
        ("/fhir/$export", first),
    ):
        response = client.post(path, json=body(patient=[named]), headers=POST)
        assert response.status_code == 400, response.text
        assert response.json()["issue"][0]["expression"] == ["patient"]
    not_patient = client.post(
        "/fhir/Patient/$export",
        json={"resourceType": "Parameters", "parameter": [
            {"name": "patient", "valueReference": {"reference": f"Group/{ids['group']}"}}]},
        headers=POST,
    )  # fmt: skip
    assert not_patient.status_code == 400
    # lenient: the others are ignored and reported, never widening the export
    lenient = post_export(client, group, body(patient=[second, third]), Prefer=LENIENT["Prefer"])
    assert ids_of(files(client, lenient)["Patient"]) == {second}
    [outcome] = errors(client, lenient)
    assert f"Patient/{third} is not a member" in outcome["issue"][0]["diagnostics"]
    nobody = post_export(client, "/fhir/Patient/$export", body(patient=["nobody"]),
                         Prefer=LENIENT["Prefer"])  # fmt: skip
    assert nobody["output"] == [] and len(nobody["error"]) == 1
    # a resident who refused the caller is as one that is not on the server
    consent = refusal(first, organization="Organization/h9")
    assert client.post("/fhir/Consent", json=consent, headers=FHIR_JSON).status_code == 201
    refused = bearer(services.settings, "system/*.rs", organization="Organization/h9")
    answers = [
        client.post("/fhir/Patient/$export", json=body(patient=[pid]), headers={**POST, **refused})
        for pid in (first, "nobody")
    ]
    assert [a.status_code for a in answers] == [400, 400]
    assert answers[0].text.replace(first, "X") == answers[1].text.replace("nobody", "X")
    narrow = bearer(services.settings, "system/Observation.rs")
    response = client.post(
        "/fhir/Patient/$export", json=body(patient=[second]), headers={**POST, **narrow}
    )
    assert response.status_code == 403  # naming patients reads them


UNSUPPORTED = [
    ({"_outputFormat": "text/csv"}, "_outputFormat"),
    ({"includeAssociatedData": "LatestProvenanceResources"}, "includeAssociatedData"),
    ({"_until": "2026-01-01T00:00:00Z"}, "_until"),
]


@pytest.mark.parametrize(("params", "name"), UNSUPPORTED)
def test_what_is_not_offered_is_refused_unless_lenient(
    client: TestClient, params: dict[str, str], name: str
) -> None:
    records(client)
    plain = get_export(client, "/fhir/Patient/$export", _type="Patient")
    assert plain["error"] == []
    strict = client.get("/fhir/Patient/$export", params={"_type": "Patient", **params},
                        headers=ASYNC)  # fmt: skip
    assert strict.status_code == 400
    issue = strict.json()["issue"][0]
    assert issue["code"] == "not-supported" and issue["expression"] == [name]
    for manifest in (
        wait(client, client.get("/fhir/Patient/$export", params={"_type": "Patient", **params},
                                headers=LENIENT)),
        post_export(client, "/fhir/Patient/$export", body(_type="Patient", **params),
                    Prefer=LENIENT["Prefer"]),
    ):  # fmt: skip
        assert files(client, manifest) == files(client, plain)  # ignored
        [outcome] = errors(client, manifest)
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"][0]["expression"] == [name]
        assert outcome["issue"][0]["severity"] == "warning"
        assert manifest["error"][0]["count"] == 1


def test_types_outside_the_record_at_patient_level(client: TestClient) -> None:
    records(client)
    params = {"_type": "Organization,Patient"}
    assert client.get("/fhir/Patient/$export", params=params, headers=ASYNC).status_code == 400
    manifest = wait(client, client.get("/fhir/Patient/$export", params=params, headers=LENIENT))
    assert [o["type"] for o in manifest["output"]] == ["Patient"]
    assert "Organization" in errors(client, manifest)[0]["issue"][0]["diagnostics"]


def test_post_jobs_keep_the_owner_cancel_and_audit_rules(
    client: TestClient, services: Services
) -> None:
    ids = records(client)
    first = ids["patients"][0]
    parameters = body(patient=[first], _outputFormat="text/csv",
                      _typeFilter=f"Observation?code={LOINC}|{GLUCOSE}")  # fmt: skip
    manifest = post_export(client, "/fhir/Patient/$export", parameters, Prefer=LENIENT["Prefer"])
    error_url = manifest["error"][0]["url"].replace("http://testserver", "")
    other = bearer(services.settings, subject="other-system")
    assert client.get(manifest["status_url"], headers=other).status_code == 404
    assert client.get(error_url, headers=other).status_code == 404
    assert client.get(error_url).status_code == 200
    assert len(lines(client, manifest["output"][0]["url"])) >= 1
    # the kick-off's audit event names the patient and records the body's parameters
    events = audit_get(client, f"/fhir/AuditEvent?patient=Patient/{first}&_count=100").json()
    queries = [
        base64.b64decode(entity["query"]).decode()
        for entry in events.get("entry", [])
        for entity in entry["resource"].get("entity", [])
        if "query" in entity
    ]
    assert any("_typeFilter=Observation" in q and "_outputFormat" in q for q in queries)
    # cancel: the status and every file, the error file too, are gone
    assert client.delete(manifest["status_url"]).status_code == 202
    assert client.get(manifest["status_url"]).status_code == 404
    assert client.get(error_url).status_code == 404
    job = manifest["status_url"].rsplit("/", 1)[-1]
    assert not (services.settings.data_dir / "exports" / job).exists()
