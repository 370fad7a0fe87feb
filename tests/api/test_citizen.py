"""The citizen mini-program backend: my profile, results, access log and consents."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from ehr_service.app import create_app
from ehr_service.interactions.context import Services
from tests.helpers import FHIR_JSON, ID_SYSTEM, bearer, make_id_number, observation, patient


def _client(services: Services, scopes: str, **claims: Any) -> TestClient:
    return TestClient(
        create_app(services=services),
        raise_server_exceptions=False,
        headers=bearer(services.settings, scopes, **claims),
    )


def _resident(client: TestClient) -> tuple[str, str]:
    number = make_id_number(born="19900101", sequence="771")
    pid = client.post(
        "/fhir/Patient",
        json=patient(identifier=[{"system": ID_SYSTEM, "value": number}], name=[{"text": "周杰"}]),
        headers=FHIR_JSON,
    ).json()["id"]
    for day, value in (("2026-01-05", 5.1), ("2026-03-09", 6.4), ("2025-11-30", 4.8)):
        obs = {**observation(f"Patient/{pid}", value), "effectiveDateTime": day}
        assert client.post("/fhir/Observation", json=obs, headers=FHIR_JSON).status_code == 201
    study = {
        "resourceType": "ImagingStudy",
        "status": "available",
        "subject": {"reference": f"Patient/{pid}"},
        "started": "2026-02-01T09:00:00+08:00",
        "description": "CT chest",
    }
    assert client.post("/fhir/ImagingStudy", json=study, headers=FHIR_JSON).status_code == 201
    return pid, number


def test_profile_results_and_access_log(client: TestClient, services: Services) -> None:
    pid, number = _resident(client)
    org = client.post(
        "/fhir/Organization",
        json={"resourceType": "Organization", "name": "四川大学华西医院"},
        headers=FHIR_JSON,
    ).json()["id"]
    with _client(
        services, "user/*.rs", subject="dr-wang-0042", organization=f"Organization/{org}"
    ) as doctor:
        assert doctor.get(f"/fhir/Patient/{pid}").status_code == 200
        assert doctor.get(f"/fhir/Observation?subject={pid}").status_code == 200
    with _client(services, "patient/*.rs", patient=pid, subject="citizen-1") as me:
        profile = me.get("/citizen/v1/me").json()
        assert profile["idNumber"] == number[:4] + "*" * 10 + number[-4:]
        assert len(profile["recordNumber"]) == 17 and profile["name"] == "周杰"
        results = me.get("/citizen/v1/me/results?limit=2").json()
        assert [i["date"][:10] for i in results["items"]] == ["2026-03-09", "2026-02-01"]
        assert [i["category"] for i in results["items"]] == ["laboratory", "imaging"]
        more = me.get(f"/citizen/v1/me/results?limit=2&before={results['next']['before']}").json()
        assert [i["date"] for i in more["items"]] == ["2026-01-05", "2025-11-30"]
        log = me.get("/citizen/v1/me/access-log").json()["items"]
        by_doctor = [i for i in log if i["organization"] == "四川大学华西医院"]
        assert {i["action"] for i in by_doctor} == {"read", "search-type"}
        assert all(i["purpose"] == "treatment" and i["allowed"] for i in by_doctor)
        assert ["Observation"] in [i["data"] for i in by_doctor]
        text = str(log)
        assert "dr-wang-0042" not in text and "subject=" not in text and "citizen-1" not in text
        assert me.get("/citizen/v1/me/results?limit=0").status_code == 400
    with _client(services, "user/*.rs") as staff:
        assert staff.get("/citizen/v1/me").status_code == 403
    with _client(services, "patient/Observation.rs", patient=pid) as narrow:
        assert narrow.get("/citizen/v1/me/results").status_code == 200
        assert narrow.get("/citizen/v1/me").status_code == 403
        refuse = {"refuse": {"region": "sichuan"}}
        assert narrow.post("/citizen/v1/me/consents", json=refuse).status_code == 403
    with TestClient(create_app(services=services), raise_server_exceptions=False) as nobody:
        assert nobody.get("/citizen/v1/me").status_code == 401


def test_consents_granted_and_revoked_by_the_resident(
    client: TestClient, services: Services
) -> None:
    pid, _ = _resident(client)
    with _client(services, "patient/*.cruds", patient=pid) as me:
        refused = me.post("/citizen/v1/me/consents", json={"refuse": {"region": "sichuan"}})
        assert refused.status_code == 201, refused.text
        consent_id = refused.json()["id"]
        assert me.get("/citizen/v1/me/consents").json()["items"] == [
            {
                "id": consent_id,
                "status": "active",
                "refuses": ["region:sichuan"],
                "dateTime": refused.json().get("dateTime")
                or me.get("/citizen/v1/me/consents").json()["items"][0]["dateTime"],
            }
        ]
        assert (
            me.post("/citizen/v1/me/consents", json={"refuse": {"planet": "mars"}}).status_code
            == 400
        )
    with _client(services, "user/*.rs", region="sichuan") as partner:
        assert partner.get(f"/fhir/Patient/{pid}").status_code == 403
    with _client(services, "patient/*.cruds", patient=pid) as me:
        refused_attempts = [
            i for i in me.get("/citizen/v1/me/access-log").json()["items"] if not i["allowed"]
        ]
        assert refused_attempts and refused_attempts[0]["action"] == "read"
    with _client(services, "patient/*.cruds", patient=pid) as me:
        assert me.delete(f"/citizen/v1/me/consents/{consent_id}").status_code == 200
        assert me.get("/citizen/v1/me/consents").json()["items"][0]["status"] == "inactive"
    with _client(services, "user/*.rs", region="sichuan") as partner:
        assert partner.get(f"/fhir/Patient/{pid}").status_code == 200
    other, _ = (
        _resident(client)
        if False
        else (client.post("/fhir/Patient", json=patient()).json()["id"], None)
    )
    with _client(services, "patient/*.cruds", patient=other) as someone_else:
        assert someone_else.delete(f"/citizen/v1/me/consents/{consent_id}").status_code == 404


@pytest.mark.parametrize(
    ("names", "shown"),
    [
        ([{"family": "王", "given": ["芳"]}], "王芳"),
        ([{"family": "Hyatt", "given": ["Fletcher"]}], "Fletcher Hyatt"),
        (
            [
                {"use": "old", "family": "Old"},
                {"use": "official", "family": "陈", "given": ["大文"]},
                {"use": "usual", "family": "Chan", "given": ["Tai Man"]},
            ],
            "陈大文",
        ),
    ],
)
def test_the_residents_name_as_written(
    client: TestClient, services: Services, names: list[Any], shown: str
) -> None:
    pid = client.post("/fhir/Patient", json=patient(name=names), headers=FHIR_JSON).json()["id"]
    with _client(services, "patient/*.rs", patient=pid) as me:
        assert me.get("/citizen/v1/me").json()["name"] == shown
