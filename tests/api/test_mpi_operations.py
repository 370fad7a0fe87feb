"""$match ranking, $merge (and preview), PIXm, and data-key rotation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from ehr_service.cli import app as cli
from ehr_service.interactions.context import Services
from ehr_service.storage.tables import resource, resource_version
from tests.helpers import FHIR_JSON, ID_SYSTEM, id_identifier, make_id_number, observation, snapshot

MATCH_GRADE = "http://hl7.org/fhir/StructureDefinition/match-grade"


def _post(client: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(f"/fhir/{body['resourceType']}", json=body, headers=FHIR_JSON)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def _person(name: str, birth: str, gender: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "name": [{"text": name}],
        "birthDate": birth,
        "gender": gender,
        **extra,
    }


def _match(client: TestClient, query: dict[str, Any], **params: Any) -> dict[str, Any]:
    parameter: list[dict[str, Any]] = [{"name": "resource", "resource": query}]
    if "only_certain" in params:
        parameter.append({"name": "onlyCertainMatches", "valueBoolean": params["only_certain"]})
    if "count" in params:
        parameter.append({"name": "count", "valueInteger": params["count"]})
    response = client.post(
        "/fhir/Patient/$match",
        json={"resourceType": "Parameters", "parameter": parameter},
        headers=FHIR_JSON,
    )
    assert response.status_code == 200, response.text
    bundle: dict[str, Any] = response.json()
    return bundle


def _ranked(bundle: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (e["resource"]["id"], e["search"]["extension"][0]["valueCode"]) for e in bundle["entry"]
    ]


def test_match_ranks_id_number_then_name_and_pinyin(client: TestClient) -> None:
    number = make_id_number(born="19800515", sequence="111")
    phone = [{"system": "phone", "value": "13900001111"}]
    address = [{"city": "重庆市", "district": "渝中区", "line": ["解放碑街道1号"]}]
    by_id = _post(client, _person("张伟", "1980-05-15", "male", identifier=[id_identifier(number)]))
    exact = _post(client, _person("张伟", "1980-05-15", "male", telecom=phone, address=address))
    latin = _post(client, _person("Zhang Wei", "1980-05-15", "male"))
    homophone = _post(client, _person("章伟", "1980-05-15", "male"))
    _post(client, _person("李娜", "1980-05-15", "female"))  # same birthday, someone else
    _post(client, _person("张伟", "1975-01-01", "male"))  # same name, other birthday

    query = _person(
        "张伟", "1980-05-15", "male", telecom=phone, address=address,
        identifier=[id_identifier(number)],
    )  # fmt: skip
    bundle = _match(client, query)
    ranked = _ranked(bundle)
    assert ranked[0] == (by_id["id"], "certain")
    assert bundle["entry"][0]["search"]["score"] == 1.0
    ids = [r[0] for r in ranked]
    assert ids[1] == exact["id"] and ranked[1][1] == "probable"
    assert set(ids[2:]) == {latin["id"], homophone["id"]}
    scores = [e["search"]["score"] for e in bundle["entry"]]
    assert scores == sorted(scores, reverse=True)
    assert all(e["search"]["mode"] == "match" for e in bundle["entry"])

    without_number = {k: v for k, v in query.items() if k != "identifier"}
    ranked = _ranked(_match(client, without_number))
    assert ranked[0] == (exact["id"], "probable")
    assert latin["id"] in [r[0] for r in ranked] and homophone["id"] in [r[0] for r in ranked]
    assert by_id["id"] in [r[0] for r in ranked]

    assert _ranked(_match(client, query, only_certain=True)) == [(by_id["id"], "certain")]
    assert _ranked(_match(client, without_number, only_certain=True)) == []
    assert len(_match(client, without_number, count=1)["entry"]) == 1


def test_match_refuses_a_bad_request(client: TestClient) -> None:
    for body in (
        {"resourceType": "Parameters"},
        {"resourceType": "Patient"},
        {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": {}}]},
        {
            "resourceType": "Parameters",
            "parameter": [
                {"name": "resource", "resource": {"resourceType": "Patient"}},
                {"name": "count", "valueInteger": 0},
            ],
        },
    ):
        response = client.post("/fhir/Patient/$match", json=body, headers=FHIR_JSON)
        assert response.status_code == 400, body
        assert response.json()["resourceType"] == "OperationOutcome"


def _merge_body(source: str, target: str, *, preview: bool = False) -> dict[str, Any]:
    return {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "source-patient", "valueReference": {"reference": f"Patient/{source}"}},
            {"name": "target-patient", "valueReference": {"reference": f"Patient/{target}"}},
            {"name": "preview", "valueBoolean": preview},
        ],
    }


def _duplicate_pair(client: TestClient) -> tuple[dict[str, Any], dict[str, Any], str, list[str]]:
    number = make_id_number(born="19700101", sequence="331")
    source = _post(
        client,
        _person(
            "刘洋", "1970-01-01", "male",
            identifier=[id_identifier(number), {"system": "urn:hospital:a", "value": "A-1"}],
        ),
    )  # fmt: skip
    target = _post(client, _person("刘洋", "1970-01-01", "male"))
    observations = [
        _post(client, observation(f"Patient/{source['id']}", value=v))["id"] for v in (5.1, 6.2)
    ]
    return source, target, number, observations


def test_merge_preview_changes_nothing_and_reports(client: TestClient, services: Services) -> None:
    source, target, _, _ = _duplicate_pair(client)
    before = snapshot(services)
    response = client.post(
        "/fhir/Patient/$merge",
        json=_merge_body(source["id"], target["id"], preview=True),
        headers=FHIR_JSON,
    )
    assert response.status_code == 200, response.text
    parts = {p["name"]: p for p in response.json()["parameter"]}
    assert (
        "2 Observation would be re-pointed"
        in parts["outcome"]["resource"]["issue"][0]["diagnostics"]
    )
    assert {"other": {"reference": f"Patient/{source['id']}"}, "type": "replaces"} in parts[
        "result"
    ]["resource"]["link"]
    assert snapshot(services) == before


def test_merge_repoints_the_record_in_one_transaction(client: TestClient) -> None:
    source, target, number, observations = _duplicate_pair(client)
    response = client.post(
        "/fhir/Patient/$merge", json=_merge_body(source["id"], target["id"]), headers=FHIR_JSON
    )
    assert response.status_code == 200, response.text
    result = {p["name"]: p for p in response.json()["parameter"]}["result"]["resource"]
    assert result["id"] == target["id"]
    assert [i["value"] for i in result["identifier"] if i["system"] == ID_SYSTEM] == [number]
    assert {"system": "urn:hospital:a", "value": "A-1", "use": "old"} in result["identifier"]
    merged_away = client.get(f"/fhir/Patient/{source['id']}").json()
    assert merged_away["active"] is False
    assert merged_away["link"] == [
        {"other": {"reference": f"Patient/{target['id']}"}, "type": "replaced-by"}
    ]
    for oid in observations:
        moved = client.get(f"/fhir/Observation/{oid}").json()
        assert moved["subject"] == {"reference": f"Patient/{target['id']}"}
        assert moved["meta"]["versionId"] == "2"
    everything = client.get(f"/fhir/Patient/{target['id']}/$everything").json()
    assert {e["resource"]["id"] for e in everything["entry"]} >= set(observations)
    assert client.get(f"/fhir/Observation?subject={source['id']}").json()["total"] == 0
    found = client.get(f"/fhir/Patient?identifier={ID_SYSTEM}|{number}").json()
    assert [e["resource"]["id"] for e in found["entry"]] == [target["id"]]
    provenance = client.get(f"/fhir/Provenance?target=Patient/{target['id']}").json()
    assert provenance["total"] == 1
    assert provenance["entry"][0]["resource"]["activity"]["coding"][0]["code"] == "merge"
    # the record numbers stay with their records
    system = "urn:oid:2.16.156.10011.1.2"
    numbers = {
        pid: [i["value"] for i in client.get(f"/fhir/Patient/{pid}").json()["identifier"]
              if i["system"] == system]
        for pid in (source["id"], target["id"])
    }  # fmt: skip
    assert numbers[source["id"]] == [
        i["value"] for i in source["identifier"] if i["system"] == system
    ]
    assert numbers[target["id"]] == [
        i["value"] for i in target["identifier"] if i["system"] == system
    ]
    again = client.post(
        "/fhir/Patient/$merge", json=_merge_body(source["id"], target["id"]), headers=FHIR_JSON
    )
    assert again.status_code == 422
    # a merged-away record is not offered by $match
    ranked = _ranked(_match(client, _person("刘洋", "1970-01-01", "male")))
    assert source["id"] not in [r[0] for r in ranked]


def test_merge_by_identifier_and_refusals(client: TestClient, services: Services) -> None:
    one = _post(
        client,
        _person(
            "陈静",
            "1988-08-08",
            "female",
            identifier=[id_identifier(make_id_number(born="19880808", sequence="222"))],
        ),
    )
    two = _post(
        client,
        _person(
            "陈静",
            "1988-08-08",
            "female",
            identifier=[id_identifier(make_id_number(born="19880808", sequence="224"))],
        ),
    )
    before = snapshot(services)
    refused = client.post(
        "/fhir/Patient/$merge", json=_merge_body(one["id"], two["id"]), headers=FHIR_JSON
    )
    assert refused.status_code == 422
    assert "different resident ID numbers" in refused.json()["issue"][0]["diagnostics"]
    same = client.post(
        "/fhir/Patient/$merge", json=_merge_body(one["id"], one["id"]), headers=FHIR_JSON
    )
    assert same.status_code == 422
    missing = client.post(
        "/fhir/Patient/$merge", json=_merge_body("nope", one["id"]), headers=FHIR_JSON
    )
    assert missing.status_code == 404
    assert snapshot(services) == before
    third = _post(client, _person("陈静", "1988-08-08", "female"))
    system = "urn:oid:2.16.156.10011.1.2"
    third_number = next(i["value"] for i in third["identifier"] if i["system"] == system)
    by_identifier = {
        "resourceType": "Parameters",
        "parameter": [
            {
                "name": "source-patient-identifier",
                "valueIdentifier": {"system": system, "value": third_number},
            },
            {
                "name": "target-patient-identifier",
                "valueIdentifier": id_identifier(make_id_number(born="19880808", sequence="222")),
            },
        ],
    }
    merged = client.post("/fhir/Patient/$merge", json=by_identifier, headers=FHIR_JSON)
    assert merged.status_code == 200, merged.text
    assert client.get(f"/fhir/Patient/{third['id']}").json()["active"] is False


def test_pixm_cross_references_identifiers(client: TestClient) -> None:
    number = make_id_number(born="19990909", sequence="991")
    patient = _post(
        client,
        _person(
            "赵敏", "1999-09-09", "female",
            identifier=[
                id_identifier(number),
                {"system": "urn:hospital:cq-first", "value": "MRN-77"},
                {"system": "urn:partner:sichuan", "value": "SC-123"},
            ],
        ),
    )  # fmt: skip
    response = client.get(
        "/fhir/Patient/$ihe-pix?sourceIdentifier=urn:hospital:cq-first|MRN-77"
        "&targetSystem=urn:partner:sichuan"
    )
    assert response.status_code == 200
    assert response.json()["parameter"] == [
        {
            "name": "targetIdentifier",
            "valueIdentifier": {"system": "urn:partner:sichuan", "value": "SC-123"},
        },
        {"name": "targetId", "valueReference": {"reference": f"Patient/{patient['id']}"}},
    ]
    everything = client.get(f"/fhir/Patient/$ihe-pix?sourceIdentifier={ID_SYSTEM}|{number}")
    systems = [
        p["valueIdentifier"]["system"]
        for p in everything.json()["parameter"]
        if p["name"] == "targetIdentifier"
    ]
    assert "urn:hospital:cq-first" in systems and "urn:partner:sichuan" in systems
    assert ID_SYSTEM not in systems
    back = client.get(
        f"/fhir/Patient/$ihe-pix?sourceIdentifier=urn:partner:sichuan|SC-123&targetSystem={ID_SYSTEM}"
    )
    assert [p["valueIdentifier"]["value"] for p in back.json()["parameter"][:1]] == [number]
    posted = client.post(
        "/fhir/Patient/$ihe-pix",
        json={
            "resourceType": "Parameters",
            "parameter": [
                {
                    "name": "sourceIdentifier",
                    "valueIdentifier": {"system": "urn:partner:sichuan", "value": "SC-123"},
                },
                {"name": "targetSystem", "valueUri": "urn:hospital:cq-first"},
            ],
        },
        headers=FHIR_JSON,
    )
    assert posted.json()["parameter"][0]["valueIdentifier"]["value"] == "MRN-77"
    assert client.get("/fhir/Patient/$ihe-pix?sourceIdentifier=urn:nobody|1").status_code == 400
    assert (
        client.get("/fhir/Patient/$ihe-pix?sourceIdentifier=urn:partner:sichuan|SC-999").status_code
        == 404
    )
    assert (
        client.get(
            "/fhir/Patient/$ihe-pix?sourceIdentifier=urn:partner:sichuan|SC-123&targetSystem=urn:nobody"
        ).status_code
        == 403
    )
    assert client.get("/fhir/Patient/$ihe-pix").status_code == 400


def test_rotate_data_key_reseals_current_and_history(
    client: TestClient,
    services: Services,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    number = make_id_number(born="19600606", sequence="606")
    created = _post(
        client, _person("孙丽", "1960-06-06", "female", identifier=[id_identifier(number)])
    )
    updated = client.put(
        f"/fhir/Patient/{created['id']}", json={**created, "gender": "female"}, headers=FHIR_JSON
    )
    assert updated.status_code == 200
    old_kid = services.identity.protection.keyring.active.kid
    monkeypatch.setenv("EHR_DATABASE_URL", database_url)
    monkeypatch.setenv("EHR_DATA_DIR", str(tmp_path / "data"))
    result = CliRunner().invoke(cli, ["keys", "rotate-data-key", "--no-wait"])
    assert result.exit_code == 0, result.output
    assert "re-sealed 3 stored versions" in result.output  # current row and two versions
    with services.unit.read() as conn:
        contents = [bytes(r[0]) for r in conn.execute(sa.select(resource.c.content))] + [
            bytes(r[0]) for r in conn.execute(sa.select(resource_version.c.content))
        ]
    assert not any(f".{old_kid}.".encode() in c for c in contents)
    # a server started before the rotation opens the new seals (it reloads the key file)
    read = client.get(f"/fhir/Patient/{created['id']}").json()
    assert [i["value"] for i in read["identifier"] if i["system"] == ID_SYSTEM] == [number]
    first = client.get(f"/fhir/Patient/{created['id']}/_history/1").json()
    assert [i["value"] for i in first["identifier"] if i["system"] == ID_SYSTEM] == [number]
    listed = CliRunner().invoke(cli, ["keys", "data-keys"])
    assert old_kid in listed.output and "retired" in listed.output


def test_merge_refusals_from_review(client: TestClient, services: Services) -> None:
    one = _post(
        client,
        _person(
            "吴磊",
            "1985-05-05",
            "male",
            identifier=[id_identifier(make_id_number(born="19850505", sequence="511"))],
        ),
    )
    two = _post(
        client,
        _person(
            "吴磊",
            "1985-05-05",
            "male",
            identifier=[id_identifier(make_id_number(born="19850505", sequence="513"))],
        ),
    )
    before = snapshot(services)
    sneaky = _merge_body(one["id"], two["id"])
    sneaky["parameter"].append(
        {"name": "result-patient", "resource": {"resourceType": "Patient", "id": two["id"]}}
    )
    assert client.post("/fhir/Patient/$merge", json=sneaky, headers=FHIR_JSON).status_code == 422
    bad_bodies = [
        {
            "resourceType": "Parameters",
            "parameter": [
                {"name": "source-patient", "valueReference": {"reference": 5}},
                {"name": "target-patient", "valueReference": {"reference": f"Patient/{two['id']}"}},
            ],
        },
        {
            "resourceType": "Parameters",
            "parameter": [
                {
                    "name": "source-patient",
                    "valueReference": {"reference": f"http://elsewhere/fhir/Patient/{one['id']}"},
                },
                {"name": "target-patient", "valueReference": {"reference": f"Patient/{two['id']}"}},
            ],
        },
        {
            **_merge_body(one["id"], two["id"]),
            "parameter": [
                *_merge_body(one["id"], two["id"])["parameter"],
                {
                    "name": "result-patient",
                    "resource": {
                        "resourceType": "Patient",
                        "id": two["id"],
                        "name": [{"given": 5}],
                    },
                },
            ],
        },
        {
            "resourceType": "Parameters",
            "parameter": [
                *(
                    {
                        "name": "source-patient-identifier",
                        "valueIdentifier": {"system": "urn:x", "value": str(i)},
                    }
                    for i in range(30)
                ),
                {"name": "target-patient", "valueReference": {"reference": f"Patient/{two['id']}"}},
            ],
        },
    ]
    for body in bad_bodies:
        response = client.post("/fhir/Patient/$merge", json=body, headers=FHIR_JSON)
        assert response.status_code == 400, response.text
    assert snapshot(services) == before


def test_merge_when_the_target_already_links_to_the_source(client: TestClient) -> None:
    source = _post(client, _person("郑洁", "1991-09-19", "female"))
    target = _post(
        client,
        _person(
            "郑洁",
            "1991-09-19",
            "female",
            link=[{"other": {"reference": f"Patient/{source['id']}"}, "type": "seealso"}],
        ),
    )
    response = client.post(
        "/fhir/Patient/$merge", json=_merge_body(source["id"], target["id"]), headers=FHIR_JSON
    )
    assert response.status_code == 200, response.text
    links = client.get(f"/fhir/Patient/{target['id']}").json()["link"]
    assert links == [{"other": {"reference": f"Patient/{source['id']}"}, "type": "replaces"}]


def test_pix_source_identifier_is_one_identifier(client: TestClient) -> None:
    for value in ("M1", "M2", "M1,M2"):
        _post(
            client,
            _person("冯", "1990-01-01", "male", identifier=[{"system": "urn:mrn", "value": value}]),
        )
    found = client.get("/fhir/Patient/$ihe-pix?sourceIdentifier=urn:mrn|M1,M2").json()
    assert len([p for p in found["parameter"] if p["name"] == "targetId"]) == 1
    bad = client.post(
        "/fhir/Patient/$ihe-pix",
        json={
            "resourceType": "Parameters",
            "parameter": [
                {"name": "sourceIdentifier", "valueIdentifier": {"system": "urn:mrn", "value": 7}}
            ],
        },
        headers=FHIR_JSON,
    )
    assert bad.status_code == 400
