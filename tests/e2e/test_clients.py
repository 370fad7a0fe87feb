"""fhirpy, a real FHIR client library, against a live server: create, read,
update, patch, delete, paged search, ``$everything`` and a transaction, each
result checked again with plain HTTP (httpx), not only through the client.

(fhirclient, the SMART on FHIR client, is driven in ``test_clients_fhirclient.py``.)
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from tests.e2e.test_two_regions import Server
from tests.helpers import observation, patient

fhirpy = pytest.importorskip(
    "fhirpy", reason="fhirpy is a dev dependency (pip install -e '.[dev]')"
)
exceptions = pytest.importorskip("fhirpy.base.exceptions")


def _client(live: Server, **requests_config: Any) -> Any:
    return fhirpy.SyncFHIRClient(
        f"{live.url}/fhir",
        authorization=f"Bearer {live.staff}",
        requests_config=requests_config,
    )


def _stored(live: Server, reference: str) -> dict[str, Any]:
    """The resource as the server stores it now, read over plain HTTP."""
    answer = live.fhir("GET", f"/{reference}")
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    assert answer.headers["ETag"] == f'W/"{body["meta"]["versionId"]}"'
    return body


def _new_patient(client: Any, **fields: Any) -> Any:
    created = client.resource("Patient", **patient(**fields))
    created.save()
    return created


def test_create_read_update_delete(live: Server) -> None:
    client = _client(live)
    created = _new_patient(client, gender="female")
    assert created.id and created["meta"]["versionId"] == "1"
    assert _stored(live, f"Patient/{created.id}")["gender"] == "female"

    read = client.reference("Patient", created.id).to_resource()
    assert read["name"] == [{"family": "王", "given": ["芳"]}]
    assert read["meta"]["versionId"] == "1"

    read["gender"] = "other"
    read.save()  # an id: PUT
    assert read["meta"]["versionId"] == "2"
    stored = _stored(live, f"Patient/{created.id}")
    assert (stored["gender"], stored["meta"]["versionId"]) == ("other", "2")
    assert stored["name"] == read["name"]

    read.delete()
    assert live.fhir("GET", f"/Patient/{created.id}").status_code == 410
    with pytest.raises(exceptions.ResourceNotFound):
        client.get("Patient", created.id)
    history = live.fhir("GET", f"/Patient/{created.id}/_history").json()
    assert history["total"] == 3


def test_patch(live: Server) -> None:
    """fhirpy 2.3.1 sends its patch as ``PATCH [base]/Patient/<id>`` with
    ``Content-Type: application/json`` (``requests``' ``json=``) and a body that
    is the JSON object of the fields given: a JSON merge patch (RFC 7396)."""
    sent: list[Any] = []
    client = _client(live, hooks={"response": [lambda r, *a, **k: sent.append(r.request)]})
    created = _new_patient(client, birthDate="1968-03-14")
    sent.clear()

    created.patch(birthDate="1969-04-15")  # the resource's patch: only that field sent
    (request,) = sent
    assert request.method == "PATCH"
    assert request.url == f"{live.url}/fhir/Patient/{created.id}"
    assert request.headers["Content-Type"] == "application/json"
    assert request.body == b'{"birthDate": "1969-04-15"}'
    assert created["meta"]["versionId"] == "2"
    stored = _stored(live, f"Patient/{created.id}")
    assert (stored["birthDate"], stored["meta"]["versionId"]) == ("1969-04-15", "2")
    assert stored["name"] == [{"family": "王", "given": ["芳"]}]  # the rest is kept

    answer = client.patch("Patient", created.id, active=True, gender=None)  # null: removed
    assert answer["meta"]["versionId"] == "3"
    stored = _stored(live, f"Patient/{created.id}")
    assert stored["active"] is True and "gender" not in stored
    assert stored["birthDate"] == "1969-04-15"


def _observations(client: Any, subject: str, count: int) -> set[str]:
    ids = set()
    for value in range(count):
        created = client.resource("Observation", **observation(subject, value=value))
        created.save()
        ids.add(created.id)
    return ids


def test_search_pages(live: Server) -> None:
    """25 results, 10 a page: fhirpy follows the server's ``next`` links and
    every result comes back exactly once."""
    client = _client(live)
    subject = f"Patient/{_new_patient(client).id}"
    created = _observations(client, subject, 25)
    search = client.resources("Observation").search(subject=subject).limit(10)

    first_page = search.fetch_raw()
    assert len(first_page["entry"]) == 10
    assert any(link["relation"] == "next" for link in first_page["link"])
    found = [o.id for o in search.fetch_all()]
    assert len(found) == 25 and set(found) == created
    assert search.count() == 25
    total = live.fhir("GET", "/Observation", params={"subject": subject, "_summary": "count"})
    assert total.json()["total"] == 25

    async def async_ids() -> list[str]:
        async_client = fhirpy.AsyncFHIRClient(
            f"{live.url}/fhir", authorization=f"Bearer {live.staff}"
        )
        listed = async_client.resources("Observation").search(subject=subject).limit(10)
        return [o.id for o in await listed.fetch_all()]

    again = asyncio.run(async_ids())
    assert len(again) == 25 and set(again) == created


def test_async_create_and_patch(live: Server) -> None:
    async def run() -> tuple[str, str]:
        client = fhirpy.AsyncFHIRClient(f"{live.url}/fhir", authorization=f"Bearer {live.staff}")
        created = client.resource("Patient", **patient())
        await created.save()
        await created.patch(gender="male")
        return created.id, created["meta"]["versionId"]

    pid, version = asyncio.run(run())
    assert version == "2"  # the client's copy took the server's answer
    stored = _stored(live, f"Patient/{pid}")
    assert (stored["gender"], stored["meta"]["versionId"]) == ("male", "2")


def test_elements(live: Server) -> None:
    """fhirpy's ``elements("name")`` asks ``_elements=name,id,resourceType``."""
    client = _client(live)
    pid = _new_patient(client).id
    (shaped,) = client.resources("Patient").search(_id=pid).elements("name").fetch()
    assert set(shaped) == {"resourceType", "id", "meta", "name"}
    assert any(tag["code"] == "SUBSETTED" for tag in shaped["meta"]["tag"])


def test_everything(live: Server) -> None:
    client = _client(live)
    created = _new_patient(client)
    subject = f"Patient/{created.id}"
    observations = _observations(client, subject, 3)
    bundle = created.execute("$everything", method="get")
    assert bundle["type"] == "searchset"
    found = {(e["resource"]["resourceType"], e["resource"]["id"]) for e in bundle["entry"]}
    assert found == {("Patient", created.id)} | {("Observation", i) for i in observations}
    direct = live.fhir("GET", f"/{subject}/$everything").json()
    assert {e["resource"]["id"] for e in direct["entry"]} == {i for _, i in found}


def test_everything_by_post(live: Server) -> None:
    client = _client(live)
    created = _new_patient(client)
    bundle = created.execute("$everything")  # R4 §3.1.0.4: operations are POSTed
    assert [e["resource"]["id"] for e in bundle["entry"]] == [created.id]


def test_transaction(live: Server) -> None:
    """A Patient and an Observation pointing at it by ``urn:uuid``, POSTed to the base."""
    client = _client(live)
    placeholder = f"urn:uuid:{uuid.uuid4()}"
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": placeholder,
                "resource": patient(gender="male"),
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "resource": observation(placeholder, value=6.1),
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    }
    answer = client.execute("", data=bundle)
    assert answer["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in answer["entry"]]
    assert statuses == ["201 Created", "201 Created"]
    locations = [e["response"]["location"].split("/_history/")[0] for e in answer["entry"]]
    patient_ref, observation_ref = locations
    assert patient_ref.startswith("Patient/") and observation_ref.startswith("Observation/")
    stored = _stored(live, observation_ref)
    assert stored["subject"] == {"reference": patient_ref}
    assert _stored(live, patient_ref)["gender"] == "male"
