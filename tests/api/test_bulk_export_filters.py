"""Bulk Data v2 kick-off parameters: ``_typeFilter`` with the FHIR search's own
semantics (paged, ORed, errors as the search gives them) and ``_elements``."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from ehr_service.fhir.search.shaping import SUBSETTED
from ehr_service.interactions import bulk_export
from ehr_service.interactions.context import Services
from ehr_service.storage import bulk_export as store
from ehr_service.storage.tables import bulk_export_job
from tests.api.bulk_helpers import (
    ASYNC,
    GLUCOSE,
    HAEMOGLOBIN,
    LENIENT,
    LOINC,
    POTASSIUM,
    errors,
    files,
    get_export,
    ids_of,
    records,
    searched,
    wait,
)
from tests.helpers import FHIR_JSON, bearer, refusal


def _jobs(services: Services) -> int:
    with services.unit.read() as conn:
        return int(
            conn.execute(sa.select(sa.func.count()).select_from(bulk_export_job)).scalar_one()
        )


# How a filtered type's pages apply the filter: by the match set (few matches) or
# per resource (many): both must export exactly what the search finds.
WALKS = pytest.mark.parametrize("driven_at_most", [10_000, 1], ids=["driven", "per-resource"])


@WALKS
def test_a_type_filter_by_code_exports_exactly_what_the_search_finds(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, driven_at_most: int
) -> None:
    monkeypatch.setattr(bulk_export, "DRIVEN_AT_MOST", driven_at_most)
    ids = records(client)
    limits: list[int] = []
    real = store.page

    def page(*args: Any, **kwargs: Any) -> Any:
        limits.append(kwargs["limit"])
        return real(*args, **kwargs)

    monkeypatch.setattr(store, "page", page)
    monkeypatch.setattr(bulk_export, "PAGE", 2)
    criteria = f"code={LOINC}|{GLUCOSE}"
    manifest = get_export(
        client, "/fhir/$export", _type="Observation,Patient", _typeFilter=f"Observation?{criteria}"
    )
    out = files(client, manifest)
    expected = searched(client, f"/fhir/Observation?{criteria}")
    glucose = {oid for oid, (_, code) in ids["observations"].items() if code == GLUCOSE}
    assert ids_of(out["Observation"]) == expected == glucose
    assert len(out["Observation"]) == 9 < len(ids["observations"])
    assert {o["type"]: o["count"] for o in manifest["output"]} == {"Observation": 9, "Patient": 3}
    assert ids_of(out["Patient"]) == set(ids["patients"])  # no filter: the whole type
    # still paged, two at a time here: never every match at once
    assert set(limits) == {2} and len(limits) >= 5 + 2


@WALKS
def test_several_filters_of_a_type_are_ored_and_other_types_whole(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, driven_at_most: int
) -> None:
    monkeypatch.setattr(bulk_export, "DRIVEN_AT_MOST", driven_at_most)
    ids = records(client)
    male = ids["patients"][1]
    first = f"code={LOINC}|{HAEMOGLOBIN}"
    second = f"code={LOINC}|{POTASSIUM}&status=amended"
    expected = searched(client, f"/fhir/Observation?{first}") | searched(
        client, f"/fhir/Observation?{second}"
    )
    assert len(expected) == 6
    repeated = get_export(
        client,
        "/fhir/$export",
        _type="Observation,Condition",
        _typeFilter=[f"Observation?{first}", f"Observation?{second}"],
    )
    joined = get_export(
        client,
        "/fhir/$export",
        _type="Observation,Condition",
        _typeFilter=f"Observation?{first},Observation?{second}",
    )
    for manifest in (repeated, joined):
        out = files(client, manifest)
        assert ids_of(out["Observation"]) == expected
        assert len(out["Condition"]) == 3
    # chains and other types, with the search's meaning
    chained = get_export(
        client,
        "/fhir/Patient/$export",
        _typeFilter=["Observation?subject:Patient.gender=male", "Patient?gender=female"],
    )
    out = files(client, chained)
    assert ids_of(out["Observation"]) == searched(
        client, "/fhir/Observation?subject:Patient.gender=male"
    )
    assert {o["subject"]["reference"] for o in out["Observation"]} == {f"Patient/{male}"}
    assert ids_of(out["Patient"]) == set(ids["patients"]) - {male}
    assert len(out["Condition"]) == 3


BAD_FILTERS = [
    ({"_typeFilter": "Observation?nope=1"}, "Unknown or unsupported search parameter 'nope'"),
    ({"_typeFilter": "Observation?date=yesterday"}, "date"),
    ({"_typeFilter": "Observation?value-quantity=lots"}, "value-quantity"),
    ({"_typeFilter": "Observation"}, "is not of the form Type?query"),
    ({"_typeFilter": "Nope?code=1"}, "'Nope' is not a resource type"),
    ({"_type": "Patient", "_typeFilter": "Observation?code=1"}, "Observation is not in _type"),
    ({"_typeFilter": "Observation?code=1&_sort=date"}, "search result parameter"),
    ({"_typeFilter": "Observation?code:in=http://x/vs"}, "terminology"),
    ({"_typeFilter": "Observation?subject:Patient.nope=1"}, "nope"),
]


def test_filter_errors_are_400s_and_record_nothing(client: TestClient, services: Services) -> None:
    records(client)
    strict_search = client.get("/fhir/Observation?nope=1", headers={"Prefer": "handling=strict"})
    assert strict_search.status_code == 400
    for params, says in BAD_FILTERS:
        response = client.get("/fhir/$export", params=params, headers=ASYNC)
        assert response.status_code == 400, (params, response.text)
        outcome = response.json()
        assert outcome["resourceType"] == "OperationOutcome"
        diagnostics = " ".join(i["diagnostics"] for i in outcome["issue"])
        assert says in diagnostics, (params, diagnostics)
        if "Unknown" in says:  # worded as the strict search words it
            assert strict_search.json()["issue"][0]["diagnostics"] in diagnostics
            assert outcome["issue"][0]["code"] == "not-supported"
    # a filter on a type the Patient level does not export, and one the token may not read
    organization = {"_typeFilter": "Organization?name=h"}
    assert (
        client.get("/fhir/Patient/$export", params=organization, headers=ASYNC).status_code == 400
    )
    narrow = bearer(services.settings, "system/Observation.rs")
    chain = {"_typeFilter": "Observation?subject:Patient.gender=male"}
    response = client.get("/fhir/$export", params=chain, headers={**ASYNC, **narrow})
    assert response.status_code == 403  # the chain searches Patient
    response = client.get("/fhir/$export", params={"_typeFilter": "Patient?gender=male"},
                          headers={**ASYNC, **narrow})  # fmt: skip
    assert response.status_code == 403
    assert _jobs(services) == 0
    assert not (services.settings.data_dir / "exports").exists() or not any(
        (services.settings.data_dir / "exports").iterdir()
    )


def test_lenient_filters_leave_out_what_cannot_be_searched(client: TestClient) -> None:
    records(client)
    criteria = f"code={LOINC}|{GLUCOSE}"
    response = client.get(
        "/fhir/$export",
        params={"_type": "Observation", "_typeFilter": f"Observation?nope=1&{criteria}"},
        headers=LENIENT,
    )
    manifest = wait(client, response)
    assert ids_of(files(client, manifest)["Observation"]) == searched(
        client, f"/fhir/Observation?{criteria}"
    )
    [outcome] = errors(client, manifest)
    assert "'nope'" in outcome["issue"][0]["diagnostics"]
    assert outcome["issue"][0]["severity"] == "warning"


def test_filters_keep_consent_refusals(client: TestClient, services: Services) -> None:
    ids = records(client)
    first = ids["patients"][0]
    consent = refusal(first, organization="Organization/h9")
    assert client.post("/fhir/Consent", json=consent, headers=FHIR_JSON).status_code == 201
    refused = bearer(services.settings, "system/*.rs", organization="Organization/h9")
    criteria = f"code={LOINC}|{GLUCOSE}"
    manifest = get_export(
        client, "/fhir/Patient/$export", refused, _typeFilter=f"Observation?{criteria}"
    )
    out = {o["type"]: o for o in manifest["output"]}
    from tests.api.bulk_helpers import lines

    exported = lines(client, out["Observation"]["url"], refused)
    assert ids_of(exported) == searched(client, f"/fhir/Observation?{criteria}", refused)
    assert len(exported) == 6
    assert f"Patient/{first}" not in {o["subject"]["reference"] for o in exported}


def test_elements_trim_and_mark_resources_as_the_search_does(client: TestClient) -> None:
    records(client)
    manifest = get_export(
        client,
        "/fhir/$export",
        _type="Observation,Patient,Condition",
        _elements="Observation.code,birthDate",
    )
    out = files(client, manifest)
    search = client.get("/fhir/Observation?_elements=code&_count=100").json()
    by_id = {e["resource"]["id"]: e["resource"] for e in search["entry"]}
    assert len(out["Observation"]) == 18
    for resource in out["Observation"]:
        assert resource == by_id[resource["id"]]  # the search's own subset
        assert set(resource) == {"resourceType", "id", "meta", "code", "status"}
        assert SUBSETTED in resource["meta"]["tag"]
    for resource in out["Patient"]:
        assert set(resource) == {"resourceType", "id", "meta", "birthDate"}
        assert SUBSETTED in resource["meta"]["tag"]
    for resource in out["Condition"]:  # no listed element applies: whole
        assert "subject" in resource and SUBSETTED not in resource.get("meta", {}).get("tag", [])
    for bad in ("Observation.nope", "Organization.name", "nope", "Observation.code.coding"):
        response = client.get(
            "/fhir/$export", params={"_type": "Observation", "_elements": bad}, headers=ASYNC
        )
        assert response.status_code == 400, (bad, response.text)
        assert response.json()["issue"][0]["expression"] == ["_elements"]
