"""Search conformance table on both backends, plus result parameters and errors."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from ehr_service.app import create_app
from ehr_service.interactions.context import Services
from tests.api.search_dataset import CASES, RESOURCES, dataset_bundle
from tests.helpers import FHIR_JSON, PUBLISHED_AT_START, bearer, patient


@pytest.fixture
def dataset(client: TestClient) -> TestClient:
    bundle = dataset_bundle()
    response = client.post("/fhir", json=bundle, headers=FHIR_JSON)
    assert response.status_code == 200, response.text
    return client


def _matches(bundle: dict) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]


def test_conformance_table(dataset: TestClient) -> None:
    failures = []
    for query, expected in CASES:
        response = dataset.get(f"/fhir/{query}")
        if response.status_code != 200:
            failures.append((query, response.status_code, response.text[:300]))
            continue
        bundle = response.json()
        got = _matches(bundle)
        if isinstance(expected, list):
            ok = got == expected
        else:
            ok = set(got) == expected and len(got) == len(expected)
        if not ok or bundle.get("total") != len(expected):
            failures.append(
                (
                    query,
                    sorted(expected) if isinstance(expected, set) else expected,
                    got,
                    bundle.get("total"),
                )
            )
    assert not failures, "\n".join(map(str, failures))


def test_include_revinclude_and_iterate(dataset: TestClient) -> None:
    bundle = dataset.get("/fhir/Observation?_id=o3&_include=Observation:performer").json()
    modes = {(e["resource"]["id"], e["search"]["mode"]) for e in bundle["entry"]}
    assert modes == {("o3", "match"), ("org2", "include")}
    assert bundle["total"] == 1
    rev = dataset.get("/fhir/Patient?_id=p1&_revinclude=Observation:subject").json()
    assert {(e["resource"]["id"], e["search"]["mode"]) for e in rev["entry"]} == {
        ("p1", "match"),
        ("o1", "include"),
        ("o2", "include"),
    }
    iterate = dataset.get(
        "/fhir/Observation?_id=o1&_include=Observation:subject"
        "&_include:iterate=Patient:organization"
    ).json()
    assert {e["resource"]["id"] for e in iterate["entry"]} == {"o1", "p1", "org1"}
    typed = dataset.get("/fhir/Observation?_id=o1&_include=Observation:performer:Practitioner")
    assert [e["resource"]["id"] for e in typed.json()["entry"]] == ["o1"]


def test_include_bounds_warn_instead_of_truncating(make_client) -> None:  # type: ignore[no-untyped-def]
    client = make_client(max_include_count=1)
    bundle = dataset_bundle()
    assert client.post("/fhir", json=bundle, headers=FHIR_JSON).status_code == 200
    result = client.get("/fhir/Patient?_id=p1&_revinclude=Observation:subject").json()
    modes = [e["search"]["mode"] for e in result["entry"]]
    assert modes.count("include") == 1
    outcome = next(e["resource"] for e in result["entry"] if e["search"]["mode"] == "outcome")
    assert "included resources" in outcome["issue"][0]["diagnostics"]
    assert outcome["issue"][0]["severity"] == "warning"


def test_every_first_page_counts_when_configured(make_services: Any) -> None:
    services = make_services(search_total="accurate")
    with TestClient(create_app(services=services), headers=bearer(services.settings)) as client:
        for _ in range(3):
            client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON)
        first = client.get("/fhir/Patient?_count=2").json()
        assert first["total"] == 3
        nxt = next(lnk["url"] for lnk in first["link"] if lnk["relation"] == "next")
        assert "total" not in client.get(nxt.replace("http://testserver", "")).json()


def test_paging_links_walk_every_match_once(dataset: TestClient) -> None:
    seen: list[str] = []
    url: str | None = "/fhir/Observation?_count=1"
    pages = 0
    while url:
        bundle = dataset.get(url).json()
        seen += _matches(bundle)
        pages += 1
        if pages == 2:  # a write between pages does not disturb paging
            dataset.put(
                "/fhir/Observation/o0", json={**RESOURCES[5], "id": "o0"}, headers=FHIR_JSON
            )
        url = next(
            (
                lnk["url"].replace("http://testserver", "")
                for lnk in bundle["link"]
                if lnk["relation"] == "next"
            ),
            None,
        )
    assert sorted(seen) == ["o1", "o2", "o3", "o4", "o9"]
    sorted_pages = dataset.get("/fhir/Patient?_sort=birthdate&_count=2").json()
    nxt = next(lnk["url"] for lnk in sorted_pages["link"] if lnk["relation"] == "next")
    second = dataset.get(nxt.replace("http://testserver", "")).json()
    assert _matches(second) == ["p3"]
    assert any(lnk["relation"] == "previous" for lnk in second["link"])


def test_result_parameters(dataset: TestClient) -> None:
    count = dataset.get("/fhir/Patient?_summary=count").json()
    assert count["total"] == 3 and "entry" not in count
    assert "total" not in dataset.get("/fhir/Patient?_total=none").json()
    # No _total: the total when the first page holds every match (free), else none
    # (no COUNT query); asked for, always.
    assert dataset.get("/fhir/Patient").json()["total"] == 3
    assert "total" not in dataset.get("/fhir/Patient?_count=2").json()
    for asked in ("_count=2&_total=accurate", "_count=2&_total=estimate", "_count=0"):
        assert dataset.get(f"/fhir/Patient?{asked}").json()["total"] == 3, asked
    summary = dataset.get("/fhir/Patient?_id=p1&_summary=true").json()["entry"][0]["resource"]
    assert "telecom" in summary and "address" in summary and "managingOrganization" in summary
    assert any(t["code"] == "SUBSETTED" for t in summary["meta"]["tag"])
    data = dataset.get("/fhir/Patient?_id=p1&_summary=data").json()["entry"][0]["resource"]
    assert "text" not in data and "gender" in data
    elements = dataset.get("/fhir/Patient?_id=p1&_elements=gender").json()["entry"][0]
    assert set(elements["resource"]) == {"resourceType", "id", "meta", "gender"}
    named = dataset.get("/fhir/Patient?_id=p1&_elements=resourceType,id,gender").json()["entry"]
    assert set(named[0]["resource"]) == {"resourceType", "id", "meta", "gender"}
    clamped = dataset.get("/fhir/Patient?_count=100000").json()
    assert len(clamped["entry"]) == 3


def test_post_search_equals_get(dataset: TestClient) -> None:
    posted = dataset.post(
        "/fhir/Observation/_search",
        content="code=2345-7&subject=p1",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert posted.status_code == 200
    assert _matches(posted.json()) == ["o1"]
    wrong = dataset.post("/fhir/Observation/_search", json={"code": "x"}, headers=FHIR_JSON)
    assert wrong.status_code == 415


def test_unknown_parameters_are_reported_or_refused(dataset: TestClient) -> None:
    lenient = dataset.get("/fhir/Patient?gender=male&shoe-size=42").json()
    assert _matches(lenient) == ["p2"]
    outcome = [e for e in lenient["entry"] if e["search"]["mode"] == "outcome"]
    assert "shoe-size" in outcome[0]["resource"]["issue"][0]["diagnostics"]
    assert "shoe-size" not in lenient["link"][0]["url"]
    strict = dataset.get(
        "/fhir/Patient?gender=male&shoe-size=42", headers={"Prefer": "handling=strict"}
    )
    assert strict.status_code == 400


@pytest.mark.parametrize(
    "query",
    [
        "Patient?birthdate=yesterday",
        "Observation?value-quantity=lots",
        "Patient?_sort=shoe",
        "Patient?_summary=maybe",
        "Patient?family:missing=perhaps",
        "Patient?gender:exact=x",
        "Patient?_total=all",
        "Observation?subject.nothing=1",
        "Patient?_has:Nope:x:y=1",
        "Patient?_include=Patient:gender",
        "Observation?code-value-quantity=2345-7",
        "Patient?_cursor=zzz",
        "Patient?identifier:of-type=a|b",
    ],
)
def test_bad_search_values_are_400(dataset: TestClient, query: str) -> None:
    response = dataset.get(f"/fhir/{query}")
    assert response.status_code == 400, response.text
    assert response.json()["resourceType"] == "OperationOutcome"


def test_terminology_modifiers_are_501(dataset: TestClient) -> None:
    response = dataset.get("/fhir/Observation?code:below=http://loinc.org|2345")
    assert response.status_code == 501


def test_search_in_a_batch(dataset: TestClient) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [{"request": {"method": "GET", "url": "Patient?gender=male"}}],
    }
    response = dataset.post("/fhir", json=bundle, headers=FHIR_JSON).json()
    inner = response["entry"][0]["resource"]
    assert inner["type"] == "searchset" and _matches(inner) == ["p2"]


def test_index_follows_updates_and_deletes(dataset: TestClient) -> None:
    p1 = dataset.get("/fhir/Patient/p1").json()
    dataset.put("/fhir/Patient/p1", json={**p1, "gender": "male"}, headers=FHIR_JSON)
    assert set(_matches(dataset.get("/fhir/Patient?gender=male").json())) == {"p1", "p2"}
    dataset.delete("/fhir/Patient/p2")
    assert _matches(dataset.get("/fhir/Patient?gender=male").json()) == ["p1"]
    assert _matches(dataset.get("/fhir/Patient?identifier=B2").json()) == []


def test_reindex_rebuilds_lost_index_rows(dataset: TestClient, services: Services) -> None:
    from ehr_service.interactions.reindex import reindex
    from ehr_service.storage.tables import INDEX_TABLES

    def index_rows() -> list[list[tuple]]:
        with services.unit.read() as conn:
            return [
                sorted(tuple(map(str, r)) for r in conn.execute(sa.select(t))) for t in INDEX_TABLES
            ]

    before = index_rows()
    with services.unit.write() as conn:
        conn.execute(sa.delete(INDEX_TABLES[1]))  # lose every token row
    assert _matches(dataset.get("/fhir/Patient?gender=male").json()) == []
    assert reindex(services, batch_size=3) == len(RESOURCES) + PUBLISHED_AT_START
    assert index_rows() == before
    assert _matches(dataset.get("/fhir/Patient?gender=male").json()) == ["p2"]


def _link(bundle: dict, relation: str) -> str | None:
    return next(
        (
            lnk["url"].replace("http://testserver", "")
            for lnk in bundle["link"]
            if lnk["relation"] == relation
        ),
        None,
    )


def test_sorted_paging_is_stable_while_writing_and_walks_back(dataset: TestClient) -> None:
    first = dataset.get("/fhir/Patient?_sort=-birthdate&_count=1").json()
    assert _matches(first) == ["p3"] and _link(first, "previous") is None
    # a new resident sorting before the next page must not shift or repeat it
    dataset.put(
        "/fhir/Patient/p0",
        json={"resourceType": "Patient", "id": "p0", "birthDate": "2000-01-01"},
        headers=FHIR_JSON,
    )
    second = dataset.get(_link(first, "next") or "").json()
    assert _matches(second) == ["p1"]
    third = dataset.get(_link(second, "next") or "").json()
    assert _matches(third) == ["p2"]
    back = dataset.get(_link(third, "previous") or "").json()
    assert _matches(back) == ["p1"]
    back_again = dataset.get(_link(back, "previous") or "").json()
    assert _matches(back_again) == ["p3"]  # p0 sorts first now, one more page back
    assert _matches(dataset.get(_link(back_again, "previous") or "").json()) == ["p0"]


def test_sorting_puts_missing_values_last_and_pages_through_them(dataset: TestClient) -> None:
    seen: list[str] = []
    url: str | None = "/fhir/Patient?_sort=address-city&_count=1"
    while url:
        bundle = dataset.get(url).json()
        seen += _matches(bundle)
        url = _link(bundle, "next")
    assert seen[0] == "p1" and sorted(seen[1:]) == ["p2", "p3"] and len(seen) == 3


def test_forged_cursor_is_400(dataset: TestClient) -> None:
    for cursor in ("nAAAA", "x", "n" + "A" * 3000, "pW10"):
        response = dataset.get(f"/fhir/Patient?_sort=birthdate&_cursor={cursor}")
        assert response.status_code == 400, cursor


def _cursor(values: list) -> str:
    import base64

    import orjson

    return "n" + base64.urlsafe_b64encode(orjson.dumps(values)).decode().rstrip("=")


@pytest.mark.parametrize(
    "query",
    [
        "Observation?component-code-value-quantity=8480-6$5e5000",
        "Observation?value-quantity=1e9999",
        "Observation?value-quantity=nan",
        f"Patient?_sort=birthdate&_cursor={_cursor(['x', 'p1'])}",
        f"Patient?_sort=birthdate&_cursor={_cursor([True, 'p1'])}",
        f"RiskAssessment?_sort=probability&_cursor={_cursor(['a', 'ra1'])}",
        f"Patient?_sort=family&_cursor={_cursor([5, 'p1'])}",
        "Patient?birthdate=1980-02-03T10:00:00%2B99:99",
    ],
)
def test_hostile_values_are_400_not_500(dataset: TestClient, query: str) -> None:
    assert dataset.get(f"/fhir/{query}").status_code == 400


@pytest.mark.parametrize(
    "query",
    [
        "Observation?code-value-date=8480-6$9999",
        "Observation?date=sa9999",
        "Observation?date=ap9999",
        "Observation?date=ap0001",
        "Patient?birthdate=0001-01-01T00:00:00%2B14:00",
        "Patient?birthdate=9999-12-31T23:00:00-12:00",
    ],
)
def test_dates_at_the_ends_of_the_calendar(dataset: TestClient, query: str) -> None:
    assert dataset.get(f"/fhir/{query}").status_code == 200


def test_extreme_stored_dates_are_indexed(dataset: TestClient) -> None:
    response = dataset.post(
        "/fhir/Observation",
        json={
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "x"},
            "effectiveDateTime": "9999-12-31T23:59:59-14:00",
        },
        headers=FHIR_JSON,
    )
    assert response.status_code == 201
    found = dataset.get("/fhir/Observation?date=ge9999-01-01").json()
    assert [e["resource"]["id"] for e in found["entry"]] == [response.json()["id"]]


@pytest.mark.parametrize(
    "query",
    [
        "Observation?value-quantity=0e5000",  # beyond the documented exponent limit
        "Observation?value-quantity=0e99999999",
        "Observation?component-code-value-quantity=8480-6$0e5000",
        "Organization?partof.partof.partof.partof.partof.partof.partof.partof.name=x",
        f"Patient?_sort=_lastUpdated&_cursor={_cursor([{'t': '2020-01-01'}, 'p1'])}",
    ],
)
def test_review_findings_are_400(dataset: TestClient, query: str) -> None:
    assert dataset.get(f"/fhir/{query}").status_code == 400


def test_modifiers_at_the_end_of_chains_and_has(dataset: TestClient) -> None:
    def ids(query: str) -> set[str]:
        return set(_matches(dataset.get(f"/fhir/{query}").json()))

    # p3's only Observation is o4 (code 85354-9)
    assert "p3" not in ids("Patient?_has:Observation:patient:code:not=85354-9")
    assert "p1" in ids("Patient?_has:Observation:patient:code:not=85354-9")
    assert ids("Patient?_has:Observation:patient:category:missing=false") == {"p1"}
    assert ids("Observation?subject:Patient.address-city:missing=true") == {"o3", "o4"}
    assert ids("Observation?subject:Patient.address-city:missing=false") == {"o1", "o2"}
    assert ids("Patient?_id:missing=true") == set()
    assert ids("Patient?_id:missing=false") == {"p1", "p2", "p3"}
    assert ids("Patient?_lastUpdated:missing=true") == set()


def test_references_with_this_servers_base_url_are_found(dataset: TestClient) -> None:
    obs = {
        "resourceType": "Observation",
        "id": "abs",
        "status": "final",
        "code": {"text": "x"},
        "subject": {"reference": "http://testserver/fhir/Patient/p2"},
    }
    dataset.put("/fhir/Observation/abs", json=obs, headers=FHIR_JSON)
    assert "abs" in _matches(dataset.get("/fhir/Observation?subject=Patient/p2").json())
    absolute = dataset.get("/fhir/Observation?subject=http://testserver/fhir/Patient/p2").json()
    assert "abs" in _matches(absolute)


CONTROL_ERRORS = [
    "Patient?_include=nonsense",
    "Patient?_include=Patient:nope",
    "Patient?_include=Nope:organization",
    "Patient?_revinclude=Observation:subject:Nope",
    "Patient?_revinclude=Observation:*",
    "Patient?_sort=nope",
    "Patient?_elements=nope",
    "Patient?_summary=maybe",
    "Patient?_total=all",
    "Patient?_count=many",
    "Patient?_contained=sometimes",
]


@pytest.mark.parametrize("query", CONTROL_ERRORS)
def test_control_parameters_are_checked_whatever_is_stored(client: TestClient, query: str) -> None:
    """The same request gets the same answer on an empty database and a full one."""
    empty = client.get(f"/fhir/{query}")
    assert empty.status_code == 400, empty.text
    bundle = dataset_bundle()
    assert client.post("/fhir", json=bundle, headers=FHIR_JSON).status_code == 200
    full = client.get(f"/fhir/{query}")
    assert full.status_code == 400, full.text
    assert full.json()["issue"][0]["expression"] == empty.json()["issue"][0]["expression"]


def test_elements_keep_choice_types_and_mandatory_elements(dataset: TestClient) -> None:
    bundle = dataset.get("/fhir/Observation?_id=o1&_elements=value,subject").json()
    (observation,) = [e["resource"] for e in bundle["entry"]]
    assert "valueQuantity" in observation and "subject" in observation
    assert {"status", "code"} <= observation.keys()  # mandatory: the subset stays valid
    assert "effectiveDateTime" not in observation
    assert {"code": "SUBSETTED"}.items() <= observation["meta"]["tag"][-1].items()


def test_summary_and_elements_on_read_and_vread(dataset: TestClient) -> None:
    for url in ("/fhir/Observation/o1", "/fhir/Observation/o1/_history/1"):
        shaped = dataset.get(f"{url}?_elements=value").json()
        assert set(shaped) == {"resourceType", "id", "meta", "status", "code", "valueQuantity"}
        text = dataset.get(f"{url}?_summary=text").json()
        assert "valueQuantity" not in text and "status" in text
        whole = dataset.get(url).json()
        assert "subject" in whole and "SUBSETTED" not in str(whole)
        assert dataset.get(f"{url}?_summary=count").status_code == 400
        assert dataset.get(f"{url}?_elements=nope").status_code == 400
