"""Exact FHIR JSON: decimals as written, byte for byte, and R4 JSON types."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ehr_service.interactions.context import Services
from tests.conftest import sample_bundles
from tests.helpers import FHIR_JSON, issue_expressions, patient, snapshot

# 1 to 25 significant digits, exponents, negatives, zero, trailing zeros
NUMBERS = [
    "1.50", "0.0010", "100.00", "1E+2", "1e2", "1.5e-7", "-3.25", "-0.0", "0", "0.0",
    "12345678901234567890.12345", "16.412818541523475", "3.141592653589793238462643",
    "7", "-12", "99999999999999999999999", "2.000", "1.0E0", "6.1",
]  # fmt: skip


def _numbers(node: Any, path: str = "") -> list[tuple[str, str]]:
    """(path, JSON text) of every number, from text parsed with numbers as strings."""
    if isinstance(node, dict):
        return [n for k, v in node.items() for n in _numbers(v, f"{path}.{k}")]
    if isinstance(node, list):
        return [n for i, v in enumerate(node) for n in _numbers(v, f"{path}[{i}]")]
    if isinstance(node, tuple):
        return [(path, node[1])]
    return []


def _as_text(raw: bytes | str) -> Any:
    return json.loads(raw, parse_float=lambda s: ("n", s), parse_int=lambda s: ("n", s))


def _observation(pid: str, text: str) -> str:
    return (
        '{"resourceType":"Observation","status":"final","code":{"text":"n"},'
        f'"subject":{{"reference":"Patient/{pid}"}},'
        f'"valueQuantity":{{"value":{text},"unit":"u"}},'
        f'"referenceRange":[{{"low":{{"value":{text}}},"high":{{"value":{text}}}}}]}}'
    )


def test_every_number_comes_back_as_written(client: TestClient) -> None:
    pid = client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON).json()["id"]
    for text in NUMBERS:
        body = _observation(pid, text)
        created = client.post("/fhir/Observation", content=body, headers=FHIR_JSON)
        assert created.status_code == 201, (text, created.text)
        expected = _numbers(_as_text(body))
        oid = created.json()["id"]
        for answer in (
            created.text,
            client.get(f"/fhir/Observation/{oid}").text,
            client.get(f"/fhir/Observation/{oid}/_history/1").text,
        ):
            served = _as_text(answer)
            assert _numbers({k: v for k, v in served.items() if k != "meta"}) == expected, text
        # an update that changes something else keeps the number's text too
        put = body.replace('"status":"final"', f'"id":"{oid}","status":"amended"')
        response = client.put(f"/fhir/Observation/{oid}", content=put, headers=FHIR_JSON)
        assert response.status_code == 200, response.text
        assert _numbers(_as_text(client.get(f"/fhir/Observation/{oid}").text))[-3:] == expected[-3:]


@pytest.mark.parametrize("path", sample_bundles(), ids=[p.name[:24] for p in sample_bundles()])
def test_synthea_numbers_round_trip(client: TestClient, path: Any) -> None:
    bundle = _as_text(path.read_bytes())
    response = client.post("/fhir", content=path.read_bytes(), headers=FHIR_JSON)
    assert response.status_code == 200, response.text[:300]
    for entry, answer in zip(bundle["entry"], response.json()["entry"], strict=True):
        location = answer["response"]["location"].split("/_history")[0]
        served = _as_text(client.get(f"/fhir/{location}").text)
        sent = entry["resource"]
        assert _numbers({k: v for k, v in served.items() if k != "meta"}) == _numbers(
            {k: v for k, v in sent.items() if k != "meta"}
        ), location


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"resourceType": "Patient", "active": "no"}, "Patient.active"),
        ({"resourceType": "Patient", "active": 1}, "Patient.active"),
        ({"resourceType": "Patient", "multipleBirthInteger": "2"}, "Patient.multipleBirthInteger"),
        ({"resourceType": "Patient", "multipleBirthInteger": 2.5}, "Patient.multipleBirthInteger"),
        ({"resourceType": "Patient", "birthDate": 19900101}, "Patient.birthDate"),
        ({"resourceType": "Patient", "_birthDate": "x", "birthDate": "1990"}, "Patient._birthDate"),
        ({"resourceType": "Patient", "name": [{"given": ["A", 7]}]}, "Patient.name[0].given[1]"),
        (
            {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
             "valueQuantity": {"value": "6.1"}},
            "Observation.valueQuantity.value",
        ),
        (
            {"resourceType": "Patient", "contained": [{"resourceType": "Organization",
                                                      "active": "true"}]},
            "Patient.contained[0](Organization).active",
        ),
    ],
)  # fmt: skip
def test_wrong_json_types_are_400_naming_the_element(
    client: TestClient, services: Services, body: dict[str, Any], where: str
) -> None:
    before = snapshot(services)
    response = client.post(f"/fhir/{body['resourceType']}", json=body, headers=FHIR_JSON)
    assert response.status_code == 400, response.text
    assert where in issue_expressions(response.json())
    assert snapshot(services) == before


def test_wrong_json_types_inside_a_transaction(client: TestClient, services: Services) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": patient(), "request": {"method": "POST", "url": "Patient"}},
            {"resource": patient(active="yes"), "request": {"method": "POST", "url": "Patient"}},
        ],
    }
    before = snapshot(services)
    response = client.post("/fhir", json=bundle, headers=FHIR_JSON)
    assert response.status_code == 400
    assert "Bundle.entry[1].resource.active" in issue_expressions(response.json())
    assert snapshot(services) == before


@pytest.mark.parametrize(
    ("stored", "query", "found"),
    [
        ("16.412818541523475", "eq16.412818541523475", True),
        ("16.412818541523475", "ne16.412818541523475", False),
        ("16.412818541523475", "16.41281854152348", True),  # [..475, ..485)
        ("16.412818541523475", "16.4128185415234755", False),  # more digits: narrower
        ("1.50", "1.5", True),
        ("1.50", "1.50", True),
        ("1.549", "1.5", True),
        ("1.551", "1.5", False),
        ("1.551", "1.55", True),
        ("100", "1e2", True),
        ("149", "1e2", True),  # 1e2: one significant digit, [50, 150)
        ("151", "1e2", False),
        ("12345678901234567890.12345", "12345678901234567890.12345", True),
        ("12345678901234567890.12345", "12345678901234567890.12346", False),
        ("12345678901234567890.12345", "gt12345678901234567890.12344", True),
        ("12345678901234567890.12345", "lt12345678901234567890.12345", False),
        ("-0.0010", "-0.001", True),
        ("-0.0010", "gt-0.002", True),
        ("-0.0010", "lt-0.002", False),
        ("99999999999999999999999", "ge99999999999999999999999", True),
    ],
)
def test_quantity_search_is_exact(client: TestClient, stored: str, query: str, found: bool) -> None:
    pid = client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON).json()["id"]
    oid = client.post(
        "/fhir/Observation", content=_observation(pid, stored), headers=FHIR_JSON
    ).json()["id"]
    bundle = client.get(f"/fhir/Observation?value-quantity={query}&subject=Patient/{pid}").json()
    ids = [e["resource"]["id"] for e in bundle.get("entry", [])]
    assert (oid in ids) is found, (stored, query)


def _all_pages(client: TestClient, url: str) -> list[str]:
    ids: list[str] = []
    while url:
        assert len(ids) < 1000, "paging does not end"
        page = client.get(url)
        assert page.status_code == 200, page.text
        body = page.json()
        ids += [e["resource"]["id"] for e in body.get("entry", [])]
        following = [link["url"] for link in body["link"] if link["relation"] == "next"]
        url = following[0].removeprefix("http://testserver") if following else ""
    return ids


def test_sorted_paging_by_exact_numbers_and_long_names(client: TestClient) -> None:
    pid = client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON).json()["id"]
    by_value = {}
    for text in ("1.50", "-3", "12345678901234567890.12345", "0.0010", "1.5000001"):
        created = client.post(
            "/fhir/Observation", content=_observation(pid, text), headers=FHIR_JSON
        )
        by_value[text] = created.json()["id"]
    ordered = _all_pages(
        client, f"/fhir/Observation?subject=Patient/{pid}&_sort=value-quantity&_count=1"
    )
    expected = ["-3", "0.0010", "1.50", "1.5000001", "12345678901234567890.12345"]
    assert ordered == [by_value[t] for t in expected]
    names = {}
    for family in ("Aaa", "B" * 2000, "Ccc"):
        body = patient(name=[{"family": family}], identifier=[{"system": "urn:sort", "value": "s"}])
        names[family[:3]] = client.post("/fhir/Patient", json=body, headers=FHIR_JSON).json()["id"]
    ordered = _all_pages(client, "/fhir/Patient?identifier=urn:sort|s&_sort=family&_count=1")
    assert ordered == [names["Aaa"], names["BBB"], names["Ccc"]]


def _cursor_of(values: list[Any]) -> str:
    import base64

    return "n" + base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "raw",
    [
        '{"resourceType":"Patient","extension":[{"url":"urn:x","valueDecimal":1e99999999999999999999}]}',
        '{"resourceType":"Observation","status":"final","code":{"text":"x"},'
        '"valueQuantity":{"value":1.' + "0" * 17000 + "}}",
        '{"resourceType":"Observation","status":"final","code":{"text":"x"},'
        '"valueQuantity":{"value":1e-5001}}',
    ],
)
def test_numbers_beyond_the_documented_limit_are_400(
    client: TestClient, services: Services, raw: str
) -> None:
    before = snapshot(services)
    resource_type = "Patient" if '"Patient"' in raw else "Observation"
    response = client.post(f"/fhir/{resource_type}", content=raw, headers=FHIR_JSON)
    assert response.status_code == 400, response.text[:300]
    assert snapshot(services) == before


def test_numbers_at_the_edges_are_answered(client: TestClient) -> None:
    pid = client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON).json()["id"]
    for text in ("9.5e4999", "-9.5e4999", "-1.99999999999999999999999999999",
                 "-1.99999999999999999999999999998", "-1.00000000000000000000000000009",
                 "-1.00000000000000000000000000005", "-1"):  # fmt: skip
        created = client.post(
            "/fhir/Observation", content=_observation(pid, text), headers=FHIR_JSON
        )
        assert created.status_code == 201, created.text
    for query in ("ap9.5e4999", "ap-9.5e4999", "9.5e4999", "gt-9.5e4999"):
        response = client.get(f"/fhir/Observation?value-quantity={query}&subject=Patient/{pid}")
        assert response.status_code == 200, (query, response.text)
    for order in ("value-quantity", "-value-quantity"):
        ids = _all_pages(client, f"/fhir/Observation?subject=Patient/{pid}&_sort={order}&_count=1")
        assert len(ids) == len(set(ids)) == 7, order
    bad = _cursor_of([{"x": 1}, "y"]).replace("eyJ4IjogMX0", "")  # not a cursor of ours
    assert client.get(f"/fhir/Observation?_sort=value-quantity&_cursor={bad}").status_code == 400
    huge = "n" + __import__("base64").urlsafe_b64encode(b'[1e99999999999999999999,"x"]').decode()
    assert client.get(f"/fhir/Observation?_sort=value-quantity&_cursor={huge}").status_code == 400


def test_integers_written_minus_zero_are_integers(client: TestClient) -> None:
    raw = '{"resourceType":"Patient","multipleBirthInteger":-0}'
    created = client.post("/fhir/Patient", content=raw, headers=FHIR_JSON)
    assert created.status_code == 201, created.text
    assert '"multipleBirthInteger":-0' in client.get(f"/fhir/Patient/{created.json()['id']}").text


def test_decimals_of_types_without_a_model_follow_the_same_limit() -> None:
    from ehr_service.fhir import jsonio
    from ehr_service.fhir.structure_validation import validate_structure

    def decimal_issues(text: str) -> list[str]:
        raw = (
            '{"resourceType":"EffectEvidenceSynthesis","status":"draft",'
            f'"useContext":[{{"code":{{"code":"x"}},"valueQuantity":{{"value":{text}}}}}]}}'
        )
        issues = validate_structure(jsonio.loads(raw))
        return [i.diagnostics for i in issues if "decimal" in i.diagnostics]

    assert decimal_issues("1e400") == [] and decimal_issues("9e4999") == []
    assert decimal_issues("1e-5001") and decimal_issues("123e-5003")
