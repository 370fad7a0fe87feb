"""fhirpy's ``get_or_create`` against a live server, and the conditional create that
does what it means, one after another and several at once.

fhirpy 2.3.1 ``SearchSet.get_or_create(resource)`` (and ``resource.create(**criteria)``)
sends ``POST [base]/Patient?identifier=...`` with the resource as the body and no
``If-None-Exist`` header (``_do_request("post", type, body, self.params)``), and reads
a 201 as "created", anything else as "found". That is not FHIR's conditional create:
R4 defines create as ``POST [base]/[type] {?_format=[mime-type]}``, and a conditional
create only through the ``If-None-Exist`` header (R4 http.html, "Conditional create";
in a transaction, the entry's ``request.ifNoneExist``). A query on a create is no
search criteria in R4, so the server cannot tell these from stray parameters and does
what R4 says: it creates, every time, one call after another or several at once, and
answers 201 to each. Reading the query as criteria would be behaviour of our own. A
client that sends the header (or the transaction entry) gets the conditional create,
which holds under concurrency: one resource, and every caller is given its id.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from tests.e2e.test_two_regions import Server
from tests.helpers import patient

fhirpy = pytest.importorskip(
    "fhirpy", reason="fhirpy is a dev dependency (pip install -e '.[dev]')"
)

SYSTEM = "urn:e2e:mrn"


def _at_once(count: int, call: Callable[[], Any]) -> list[Any]:
    """``call`` in ``count`` threads released together; their results."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(index: int) -> None:
        barrier.wait()
        results[index] = call()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def _with_identifier(value: str) -> dict[str, Any]:
    return patient(identifier=[{"system": SYSTEM, "value": value}])


def _stored_ids(live: Server, value: str) -> set[str]:
    found = live.fhir("GET", "/Patient", params={"identifier": f"{SYSTEM}|{value}"}).json()
    return {entry["resource"]["id"] for entry in found.get("entry", [])}


def test_get_or_create_is_a_plain_create_here(live: Server) -> None:
    sent: list[Any] = []
    client = fhirpy.SyncFHIRClient(
        f"{live.url}/fhir",
        authorization=f"Bearer {live.staff}",
        requests_config={"hooks": {"response": [lambda r, *a, **k: sent.append(r.request)]}},
    )
    value = uuid.uuid4().hex
    criteria = client.resources("Patient").search(identifier=f"{SYSTEM}|{value}")

    first, created = criteria.get_or_create(client.resource("Patient", **_with_identifier(value)))
    (request,) = sent
    assert request.method == "POST"
    assert request.url.startswith(f"{live.url}/fhir/Patient?identifier=")
    assert "If-None-Exist" not in request.headers  # the criteria are only in the URL
    assert created
    second, created_again = criteria.get_or_create(
        client.resource("Patient", **_with_identifier(value))
    )
    assert created_again and second.id != first.id  # R4: a create, not a match

    at_once = _at_once(
        2,
        lambda: criteria.get_or_create(client.resource("Patient", **_with_identifier(value))),
    )
    assert [was_created for _, was_created in at_once] == [True, True]
    assert len(_stored_ids(live, value)) == 4


def test_if_none_exist_creates_once_however_many_ask_at_once(live: Server) -> None:
    value = uuid.uuid4().hex
    criteria = f"identifier={SYSTEM}|{value}"

    def by_header() -> tuple[int, str]:
        answer = live.fhir(
            "POST",
            "/Patient",
            json=_with_identifier(value),
            headers={"If-None-Exist": criteria, "Content-Type": "application/fhir+json"},
        )
        return answer.status_code, answer.headers["Location"].split("/")[5]

    answers = _at_once(4, by_header)
    assert sorted(status for status, _ in answers) == [200, 200, 200, 201]
    assert len({pid for _, pid in answers}) == 1
    assert _stored_ids(live, value) == {answers[0][1]}

    client = fhirpy.SyncFHIRClient(f"{live.url}/fhir", authorization=f"Bearer {live.staff}")
    entry = {
        "resource": _with_identifier(value),
        "request": {"method": "POST", "url": "Patient", "ifNoneExist": criteria},
    }
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [entry]}
    # fhirpy's way to the same: a transaction whose entry carries request.ifNoneExist
    matched = _at_once(2, lambda: client.execute("", data=bundle)["entry"][0]["response"])
    assert {r["status"].split()[0] for r in matched} == {"200"}
    assert {r["location"].split("/")[1] for r in matched} == {answers[0][1]}
    assert _stored_ids(live, value) == {answers[0][1]}
