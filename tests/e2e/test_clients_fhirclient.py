"""fhirclient (SMART on FHIR's Python client, R4 models) against a live server:
create, read, update, delete, paged search following the Bundle's ``next``
links, and a transaction, each result checked again with plain HTTP (httpx).

(fhirpy is driven in ``test_clients.py``.)
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.test_two_regions import Server
from tests.helpers import observation, patient

client_module = pytest.importorskip(
    "fhirclient.client", reason="fhirclient is a dev dependency (pip install -e '.[dev]')"
)
requests = pytest.importorskip("requests")  # fhirclient's HTTP library
bundle_model = pytest.importorskip("fhirclient.models.bundle")
observation_model = pytest.importorskip("fhirclient.models.observation")
patient_model = pytest.importorskip("fhirclient.models.patient")


@pytest.fixture(scope="module")
def smart(live: Server) -> Iterator[Any]:
    """The client's server, its session carrying the staff token."""
    client = client_module.FHIRClient(
        settings={"app_id": "ehr-e2e", "api_base": f"{live.url}/fhir"}
    )
    client.server.session.headers["Authorization"] = f"Bearer {live.staff}"
    try:
        yield client.server
    finally:
        client.server.session.close()


def _stored(live: Server, reference: str) -> dict[str, Any]:
    answer = live.fhir("GET", f"/{reference}")
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    assert answer.headers["ETag"] == f'W/"{body["meta"]["versionId"]}"'
    return body


def _new_patient(smart: Any, **fields: Any) -> str:
    created = patient_model.Patient(patient(**fields)).create(smart)
    assert created["meta"]["versionId"] == "1"
    return str(created["id"])


def test_capability_statement(smart: Any) -> None:
    """fhirclient reads ``metadata`` into its strict R4 model before anything else."""
    statement = smart.capabilityStatement
    assert statement.fhirVersion == "4.0.1"
    assert any("json" in media for media in statement.format)
    assert "application/merge-patch+json" in statement.patchFormat
    assert statement.rest[0].mode == "server"


def test_create_read_update_delete(live: Server, smart: Any) -> None:
    pid = _new_patient(smart, gender="female")
    assert _stored(live, f"Patient/{pid}")["gender"] == "female"

    read = patient_model.Patient.read(pid, smart)
    assert (read.name[0].family, read.name[0].given) == ("王", ["芳"])
    assert read.meta.versionId == "1"

    read.gender = "other"
    updated = read.update()
    assert updated["meta"]["versionId"] == "2"
    stored = _stored(live, f"Patient/{pid}")
    assert (stored["gender"], stored["meta"]["versionId"]) == ("other", "2")
    assert stored["birthDate"] == "1968-03-14"

    read.delete()
    assert live.fhir("GET", f"/Patient/{pid}").status_code == 410
    with pytest.raises(requests.HTTPError) as gone:  # fhirclient maps 404 only
        patient_model.Patient.read(pid, smart)
    assert gone.value.response.status_code == 410
    assert live.fhir("GET", f"/Patient/{pid}/_history").json()["total"] == 3


def test_search_pages(live: Server, smart: Any) -> None:
    """25 results, 10 a page: ``perform_iter`` follows each Bundle's ``next`` link."""
    subject = f"Patient/{_new_patient(smart)}"
    created = set()
    for value in range(25):
        body = observation(subject, value=value)
        created.add(observation_model.Observation(body).create(smart)["id"])

    search = observation_model.Observation.where({"subject": subject, "_count": "10"})
    pages = list(search.perform_iter(smart))
    assert [len(page.entry) for page in pages] == [10, 10, 5]
    nexts = [[link.url for link in page.link if link.relation == "next"] for page in pages]
    assert [len(n) for n in nexts] == [1, 1, 0]
    assert all(n[0].startswith(f"{live.url}/fhir/Observation?") for n in nexts[:2])
    found = [entry.resource.id for page in pages for entry in page.entry]
    assert len(found) == 25 and set(found) == created
    assert all(
        entry.resource.subject.reference == subject for page in pages for entry in page.entry
    )
    total = live.fhir("GET", "/Observation", params={"subject": subject, "_summary": "count"})
    assert total.json()["total"] == 25

    resources = [r.id for r in search.perform_resources_iter(smart)]
    assert sorted(resources) == sorted(found)


def test_transaction(live: Server, smart: Any) -> None:
    placeholder = f"urn:uuid:{uuid.uuid4()}"
    transaction = bundle_model.Bundle(
        {
            "type": "transaction",
            "entry": [
                {
                    "fullUrl": placeholder,
                    "resource": patient(gender="male"),
                    "request": {"method": "POST", "url": "Patient"},
                },
                {
                    "resource": observation(placeholder, value=4.4),
                    "request": {"method": "POST", "url": "Observation"},
                },
            ],
        }
    )
    assert transaction.createPath() is None  # a transaction is POSTed to the base
    answer = bundle_model.Bundle(transaction.create(smart))  # the R4 model accepts it
    assert answer.type == "transaction-response"
    assert [e.response.status for e in answer.entry] == ["201 Created", "201 Created"]
    patient_ref, observation_ref = (
        e.response.location.split("/_history/")[0] for e in answer.entry
    )
    assert patient_ref.startswith("Patient/") and observation_ref.startswith("Observation/")
    stored = _stored(live, observation_ref)
    assert stored["subject"] == {"reference": patient_ref}
    assert stored["valueQuantity"]["value"] == 4.4
    read = observation_model.Observation.read(observation_ref.split("/")[1], smart)
    assert read.subject.reference == patient_ref
