"""A sensible minimal call of each operation the CapabilityStatement lists, at a
level its definition gives, and the status it should answer with (the test of the
statement, ``test_capability.py``, makes them)."""

from __future__ import annotations

import time
from typing import Any

from fastapi.testclient import TestClient

from ehr_service.mpi.health_card import LocalTestCardVerifier
from ehr_service.recognition.rules import RETEST_REASONS
from tests.helpers import FHIR_JSON, audit_get, lab, organization, parameters, patient
from tests.minimal_resources import minimal

ASYNC = {"Prefer": "respond-async"}
MRN = {"system": "urn:oid:1.2.156.112604.1", "value": "MRN-0001"}
CATALOGUE = "urn:ehr-service:recognition-item"
CARD_SECRET = "capability-card-secret"  # EHR_HEALTH_CARD_TEST_SECRET of test_capability


def _resident(client: TestClient, ids: dict[str, str]) -> str:
    """A resident with a hospital record number and a recognisable glucose result."""
    if "resident" not in ids:
        org = organization("cap-h1")
        assert (
            client.put("/fhir/Organization/cap-h1", json=org, headers=FHIR_JSON).status_code == 201
        )
        created = client.post("/fhir/Patient", json=patient(identifier=[MRN]), headers=FHIR_JSON)
        ids["resident"] = created.json()["id"]
        result = lab(ids["resident"], "2345-7", "2026-03-01", "cap-h1")
        assert client.post("/fhir/Observation", json=result, headers=FHIR_JSON).status_code == 201
    return ids["resident"]


def _stored(client: TestClient, resource_type: str, url: str) -> str:
    """The id of the published terminology resource with this url."""
    found = client.get(f"/fhir/{resource_type}", params={"url": url}).json()
    resource_id: str = found["entry"][0]["resource"]["id"]
    return resource_id


def _group(client: TestClient, ids: dict[str, str]) -> str:
    member = {"entity": {"reference": f"Patient/{_resident(client, ids)}"}}
    body = {"resourceType": "Group", "type": "person", "actual": True, "member": [member]}
    group_id: str = client.post("/fhir/Group", json=body, headers=FHIR_JSON).json()["id"]
    return group_id


def _merge(client: TestClient, ids: dict[str, str]) -> Any:
    source = client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON).json()["id"]
    target = _resident(client, ids)
    body = parameters(
        {"name": "source-patient", "valueReference": {"reference": f"Patient/{source}"}},
        {"name": "target-patient", "valueReference": {"reference": f"Patient/{target}"}},
        {"name": "preview", "valueBoolean": True},
    )  # fmt: skip
    return client.post("/fhir/Patient/$merge", json=body, headers=FHIR_JSON)


LAB_ITEM = {"name": "item", "valueCoding": {"system": "http://loinc.org", "code": "2345-7"}}
LOINC_GLUCOSE = {"system": "http://loinc.org", "code": "2345-7"}


def _call(client: TestClient, name: str, level: str, t: str, ids: dict[str, str]) -> Any:
    """The response of ``$name`` at ``level`` (of type ``t``); None: no such call."""
    if name == "export":
        path = {
            "system": "/fhir",
            "type": f"/fhir/{t}",
            "instance": f"/fhir/{t}/{_group(client, ids)}",
        }
        return client.get(f"{path[level]}/$export", headers=ASYNC)
    if name == "recognition-stats":
        return client.get("/fhir/$recognition-stats", params={"groupBy": "region"})
    if name == "everything":
        on = f"/{_resident(client, ids)}" if level == "instance" else ""
        return client.get(f"/fhir/Patient{on}/$everything", params={"_count": 5})
    if name == "match":
        body = parameters({"name": "resource", "resource": patient()})
        return client.post("/fhir/Patient/$match", json=body, headers=FHIR_JSON)
    if name == "merge":
        return _merge(client, ids)
    if name == "ihe-pix":
        _resident(client, ids)
        source = f"{MRN['system']}|{MRN['value']}"
        return client.get("/fhir/Patient/$ihe-pix", params={"sourceIdentifier": source})
    if name == "bind-health-card":
        card = parameters({"name": "cardId", "valueString": "AB" * 32})
        path = f"/fhir/Patient/{_resident(client, ids)}/$bind-health-card"
        return client.post(path, json=card, headers=FHIR_JSON)
    if name == "resolve-health-card":  # test_capability configures the local test double
        card = parameters({"name": "cardId", "valueString": "CD" * 32})
        path = f"/fhir/Patient/{_resident(client, ids)}/$bind-health-card"
        assert client.post(path, json=card, headers=FHIR_JSON).status_code == 200
        qr = LocalTestCardVerifier(CARD_SECRET).dynamic("CD" * 32, int(time.time()) + 60)
        scan = parameters({"name": "qrCode", "valueString": qr},
                          {"name": "scene", "valueCode": "lab-report"})  # fmt: skip
        return client.post("/fhir/Patient/$resolve-health-card", json=scan, headers=FHIR_JSON)
    if name in {"recognizable-results", "recognition-decision"}:
        given = [LAB_ITEM, {"name": "asOf", "valueDate": "2026-03-15"}]
        if name == "recognition-decision":
            reason = next(iter(RETEST_REASONS))
            given += [{"name": "decision", "valueCode": "retest"},
                      {"name": "reason", "valueCode": reason}]  # fmt: skip
        path = f"/fhir/Patient/{_resident(client, ids)}/${name}"
        return client.post(path, json=parameters(*given), headers=FHIR_JSON)
    if name in {"lookup", "validate-code", "expand", "translate"}:
        query = {"code": "LAB-GLU"} if name != "expand" else {"count": "2"}
        if name == "translate":
            query = dict(LOINC_GLUCOSE)
        on = ""
        if level == "instance":
            on = f"/{_stored(client, t, _catalogue_url(t))}"
        elif name != "translate":
            query["url" if t == "ValueSet" else "system"] = _catalogue_url(t)
        return client.get(f"/fhir/{t}{on}/${name}", params=query)
    if name == "inclusion-proof":
        return audit_get(client, f"/fhir/AuditEvent/{_sealed_event(client)}/$inclusion-proof")
    if name == "validate" and level == "type":  # a Parameters is the operation's own input
        body = (
            minimal(t)
            if t != "Parameters"
            else parameters({"name": "resource", "resource": minimal(t)})
        )
        return client.post(f"/fhir/{t}/$validate", json=body, headers=FHIR_JSON)
    if name == "validate":
        return client.get(f"/fhir/{t}/{ids[t]}/$validate")
    return None


def _catalogue_url(resource_type: str | None) -> str:
    return {
        "CodeSystem": CATALOGUE,
        "ValueSet": "urn:ehr-service:ValueSet/recognition-items-laboratory",
        "ConceptMap": "urn:ehr-service:recognition-item-map",
    }[str(resource_type)]


def _sealed_event(client: TestClient) -> str:
    """The oldest event of the newest page: sealed before the search was made."""
    page = audit_get(client, "/fhir/AuditEvent?_count=20").json()
    event_id: str = page["entry"][-1]["resource"]["id"]
    return event_id


def call_operation(
    client: TestClient, name: str, level: str, resource_type: str | None, ids: dict[str, str]
) -> tuple[Any, int]:
    """(the response, the status it should have) of ``$name`` at ``level``."""
    response = _call(client, name, level, resource_type or "", ids)
    assert response is not None, f"no call of ${name} at the {level} level"
    expected = {"recognition-decision": 201, "export": 202}
    return response, expected.get(name, 200)
