"""Patient/$everything: the compartment page by page, with referenced resources."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.conftest import PROJECT_ROOT
from tests.helpers import FHIR_JSON, observation

SAMPLE = next((PROJECT_ROOT / "tests" / "data" / "synthea").glob("*.json"))


def _ingest(client: TestClient) -> str:
    response = client.post(
        "/fhir", content=SAMPLE.read_bytes(), headers={**FHIR_JSON, "Prefer": "return=minimal"}
    )
    assert response.status_code == 200
    locations = [e["response"]["location"] for e in response.json()["entry"]]
    return next(loc.split("/")[1] for loc in locations if loc.startswith("Patient/"))


def _walk(client: TestClient, url: str) -> tuple[list[dict], list[dict], dict]:
    matches: list[dict] = []
    includes: list[dict] = []
    first: dict = {}
    next_url: str | None = url
    while next_url:
        bundle = client.get(next_url).json()
        first = first or bundle
        for entry in bundle.get("entry", []):
            (matches if entry["search"]["mode"] == "match" else includes).append(entry)
        next_url = next(
            (
                lnk["url"].replace("http://testserver", "")
                for lnk in bundle["link"]
                if lnk["relation"] == "next"
            ),
            None,
        )
    return matches, includes, first


def test_everything_pages_through_a_lifelong_record(client: TestClient) -> None:
    pid = _ingest(client)
    compartment_size = client.get(f"/fhir/Patient/{pid}/$everything?_count=0").json()["total"]
    matches, includes, first = _walk(client, f"/fhir/Patient/{pid}/$everything?_count=25")
    ids = [(e["resource"]["resourceType"], e["resource"]["id"]) for e in matches]
    assert len(ids) == len(set(ids)) == compartment_size == first["total"]
    assert ("Patient", pid) in ids
    assert {"Encounter", "Observation", "Condition"} <= {t for t, _ in ids}
    for entry in matches:
        resource = entry["resource"]
        if resource["resourceType"] in {"Observation", "Encounter", "Condition"}:
            assert resource.get("subject", resource.get("patient"))["reference"] == (
                f"Patient/{pid}"
            )
    # the organisations and practitioners they point at come along as includes
    assert {"Organization", "Practitioner"} & {e["resource"]["resourceType"] for e in includes}


def test_everything_filters(client: TestClient) -> None:
    pid = _ingest(client)
    only = client.get(f"/fhir/Patient/{pid}/$everything?_type=Condition,Patient").json()
    assert {e["resource"]["resourceType"] for e in only["entry"]} == {"Condition", "Patient"}
    future = client.get(f"/fhir/Patient/{pid}/$everything?_since=2999-01-01").json()
    assert future["total"] == 0 and "entry" not in future
    assert client.get("/fhir/Patient/nobody/$everything").status_code == 404
    assert client.get(f"/fhir/Patient/{pid}/$everything?_type=Unicorn").status_code == 400
    assert client.get(f"/fhir/Patient/{pid}/$everything?_cursor=x").status_code == 400
    everyone = client.get("/fhir/Patient/$everything?_count=5").json()
    assert everyone["total"] >= only["total"]


def test_unknown_types_are_refused_by_everything_and_export(client: TestClient) -> None:
    pid = client.post(
        "/fhir/Patient",
        json={"resourceType": "Patient"},
        headers={"Content-Type": "application/fhir+json"},
    ).json()["id"]
    for url in (
        f"/fhir/Patient/{pid}/$everything?_type=Observation,Nope",
        "/fhir/$export?_type=Nope",
    ):
        response = client.get(url, headers={"Prefer": "respond-async"})
        assert response.status_code == 400, (url, response.text)
        issue = response.json()["issue"][0]
        assert issue["expression"] == ["_type"] and "Nope" in issue["diagnostics"]


def test_everything_by_post_with_parameters(client: TestClient) -> None:
    pid = client.post("/fhir/Patient", json={"resourceType": "Patient"}, headers=FHIR_JSON).json()[
        "id"
    ]
    client.post("/fhir/Observation", json=observation(f"Patient/{pid}"), headers=FHIR_JSON)
    empty = client.post(f"/fhir/Patient/{pid}/$everything")
    assert empty.status_code == 200, empty.text
    assert {e["resource"]["resourceType"] for e in empty.json()["entry"]} == {
        "Patient",
        "Observation",
    }
    body = {
        "resourceType": "Parameters",
        "parameter": [{"name": "_type", "valueString": "Patient"}],
    }
    typed = client.post(f"/fhir/Patient/{pid}/$everything", json=body, headers=FHIR_JSON)
    assert [e["resource"]["resourceType"] for e in typed.json()["entry"]] == ["Patient"]
    bad = client.post(
        f"/fhir/Patient/{pid}/$everything", json={"resourceType": "Patient"}, headers=FHIR_JSON
    )
    assert bad.status_code == 400
    nested = {"resourceType": "Parameters", "parameter": [{"name": "_since", "part": []}]}
    refused = client.post(f"/fhir/Patient/{pid}/$everything", json=nested, headers=FHIR_JSON)
    assert refused.status_code == 400
    assert refused.json()["issue"][0]["expression"] == ["Parameters.parameter[0]"]
