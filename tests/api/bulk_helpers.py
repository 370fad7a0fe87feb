"""What the Bulk Data export tests share: a small record set, kick-off by GET or
POST, polling, and the files read back."""

from __future__ import annotations

import time
from typing import Any

import orjson
from fastapi.testclient import TestClient

from tests.helpers import FHIR_JSON, lab, organization, parameters

ASYNC = {"Prefer": "respond-async"}
LENIENT = {"Prefer": "respond-async, handling=lenient"}
GLUCOSE, POTASSIUM, HAEMOGLOBIN = "2345-7", "2823-3", "718-7"
LOINC = "http://loinc.org"


def records(client: TestClient) -> dict[str, Any]:
    """Three residents, each with results of three codes on several days, a
    Condition each, an Organization, and a Group of the first two."""
    assert (
        client.put("/fhir/Organization/h1", json=organization("h1"), headers=FHIR_JSON).status_code
        == 201
    )
    ids: dict[str, Any] = {"patients": [], "observations": {}}
    for gender in ("female", "male", "female"):
        body = {"resourceType": "Patient", "gender": gender, "birthDate": "1970-01-01"}
        pid = client.post("/fhir/Patient", json=body, headers=FHIR_JSON).json()["id"]
        ids["patients"].append(pid)
        for code, days in ((GLUCOSE, 3), (POTASSIUM, 2), (HAEMOGLOBIN, 1)):
            for day in range(days):
                status = "final" if day % 2 == 0 else "amended"
                result = lab(pid, code, f"2026-03-0{day + 1}", "h1", status=status)
                created = client.post("/fhir/Observation", json=result, headers=FHIR_JSON)
                assert created.status_code == 201, created.text
                ids["observations"][created.json()["id"]] = (pid, code)
        condition = {
            "resourceType": "Condition",
            "subject": {"reference": f"Patient/{pid}"},
            "code": {"text": "diabetes"},
        }
        assert client.post("/fhir/Condition", json=condition, headers=FHIR_JSON).status_code == 201
    group = {
        "resourceType": "Group",
        "type": "person",
        "actual": True,
        "member": [{"entity": {"reference": f"Patient/{p}"}} for p in ids["patients"][:2]],
    }
    ids["group"] = client.post("/fhir/Group", json=group, headers=FHIR_JSON).json()["id"]
    return ids


def body(**values: Any) -> dict[str, Any]:
    """A kick-off Parameters body: each value a string, a list of them, or for
    ``patient`` Patient ids."""
    parts = []
    for name, value in values.items():
        for item in value if isinstance(value, list) else [value]:
            if name == "patient":
                parts.append({"name": name, "valueReference": {"reference": f"Patient/{item}"}})
            elif name == "_since":
                parts.append({"name": name, "valueInstant": item})
            else:
                parts.append({"name": name, "valueString": item})
    return parameters(*parts)


def wait(client: TestClient, kickoff: Any, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """The manifest of an accepted kick-off, once done."""
    assert kickoff.status_code == 202, kickoff.text
    status_url = kickoff.headers["Content-Location"].replace("http://testserver", "")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = client.get(status_url, headers=headers or {})
        if status.status_code == 200:
            manifest: dict[str, Any] = status.json()
            manifest["status_url"] = status_url
            return manifest
        assert status.status_code == 202, status.text
        time.sleep(0.05)
    raise AssertionError("the export did not finish")


def get_export(
    client: TestClient, path: str, headers: dict[str, str] | None = None, **params: Any
) -> dict[str, Any]:
    response = client.get(path, params=params, headers={**ASYNC, **(headers or {})})
    return wait(client, response, headers)


def post_export(
    client: TestClient, path: str, parameters_body: dict[str, Any], **headers: str
) -> dict[str, Any]:
    response = client.post(path, json=parameters_body, headers={**ASYNC, **FHIR_JSON, **headers})
    return wait(client, response)


def lines(client: TestClient, url: str, headers: dict[str, str] | None = None) -> list[Any]:
    response = client.get(url.replace("http://testserver", ""), headers=headers or {})
    assert response.status_code == 200, response.text
    return [orjson.loads(line) for line in response.content.splitlines() if line]


def files(client: TestClient, manifest: dict[str, Any]) -> dict[str, list[Any]]:
    """Resource type -> the resources of its files, in file order."""
    out: dict[str, list[Any]] = {}
    for item in manifest["output"]:
        out.setdefault(item["type"], []).extend(lines(client, item["url"]))
    return out


def ids_of(resources: list[Any]) -> set[str]:
    return {r["id"] for r in resources}


def searched(client: TestClient, path: str, headers: dict[str, str] | None = None) -> set[str]:
    """Ids a FHIR search finds (every page)."""
    found: set[str] = set()
    url: str | None = path + ("&" if "?" in path else "?") + "_count=7"
    while url:
        bundle = client.get(url.replace("http://testserver", ""), headers=headers or {}).json()
        assert bundle["resourceType"] == "Bundle", bundle
        found |= {
            e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"
        }
        url = next((ln["url"] for ln in bundle["link"] if ln["relation"] == "next"), None)
    return found


def errors(client: TestClient, manifest: dict[str, Any]) -> list[Any]:
    """The OperationOutcomes of the manifest's error files."""
    out = []
    for item in manifest["error"]:
        assert item["type"] == "OperationOutcome"
        out.extend(lines(client, item["url"]))
    return out
