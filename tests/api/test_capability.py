"""The CapabilityStatement is true: every claim in it is called and answers.

Every interaction of every resource entry (on a stored resource of that type), every
search parameter under ``Prefer: handling=strict``, every ``_include`` and
``_revinclude`` value, every operation at each level its definition gives, and
every definition's canonical url through ``/fhir/OperationDefinition``; and the
routes of the application are exactly the operations the statement lists.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.operationdefinition import OperationDefinition

from ehr_service.audit.events import INTERACTIONS
from ehr_service.audit.sealing import Sealer
from ehr_service.exchange.keys import SigningKeys
from ehr_service.fhir.validation import validate_resource
from ehr_service.interactions.context import Services
from tests.api.capability_calls import CARD_SECRET, call_operation
from tests.helpers import AUDITOR_SCOPES, FHIR_JSON, audit_get, bearer, seal_all
from tests.minimal_resources import minimal

ROUTE_MISS = "No FHIR endpoint"
STRICT = {"Prefer": "handling=strict"}
# Not operations: the status and file URLs the Bulk Data kick-off hands out.
NOT_OPERATIONS = {"export-status", "export-file"}


@pytest.fixture
def services(make_services: Callable[..., Services]) -> Services:
    """Every advertised operation answers here: e-health cards need a verifier (the
    local test double). One client walks every interaction of every type, some 2,300
    requests: more than the default burst and refill allow on a fast machine, so no
    rate limit here (it is tested on its own, tests/api/test_limits.py)."""
    return make_services(
        health_card_verifier="local-test",
        health_card_test_secret=CARD_SECRET,
        rate_limit_per_minute=0,
    )


def answered(response: Any, what: str) -> None:
    """Routed and carried out: no route miss, no 405 or 501, no 500."""
    assert response.status_code not in {405, 500, 501}, (what, response.text[:400])
    assert not (response.status_code == 404 and ROUTE_MISS in response.text), what


def statement(client: TestClient) -> dict[str, Any]:
    response = client.get("/fhir/metadata")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def entries(client: TestClient) -> list[dict[str, Any]]:
    resources: list[dict[str, Any]] = statement(client)["rest"][0]["resource"]
    return resources


def store_one_of_each(client: TestClient, types: list[str]) -> dict[str, str]:
    """A stored resource of each type (minimal: its required elements only)."""
    ids = {}
    for resource_type in types:
        created = client.post(f"/fhir/{resource_type}", json=minimal(resource_type),
                              headers=FHIR_JSON)  # fmt: skip
        assert created.status_code == 201, (resource_type, created.text[:400])
        ids[resource_type] = created.json()["id"]
    return ids


def generic(resources: list[dict[str, Any]]) -> list[str]:
    return [r["type"] for r in resources if {"create", "update"} <= codes(r)]


def codes(entry: dict[str, Any]) -> set[str]:
    return {i["code"] for i in entry["interaction"]}


def _instance_interactions(client: TestClient, entry: dict[str, Any], rid: str) -> None:
    resource_type, claimed = entry["type"], codes(entry)
    path = f"/fhir/{resource_type}/{rid}"
    checks = {
        "read": lambda: client.get(path),
        "vread": lambda: client.get(f"{path}/_history/1"),
        "update": lambda: client.put(
            path, json={**minimal(resource_type), "id": rid}, headers=FHIR_JSON
        ),
        "patch": lambda: client.patch(
            path,
            json=[{"op": "add", "path": "/language", "value": "en"}],
            headers={"Content-Type": "application/json-patch+json"},
        ),
        "history-instance": lambda: client.get(f"{path}/_history"),
        "history-type": lambda: client.get(f"/fhir/{resource_type}/_history"),
        "search-type": lambda: client.get(f"/fhir/{resource_type}?_id={rid}"),
    }
    for code, call in checks.items():
        if code in claimed:
            response = call()
            assert response.status_code == 200, (resource_type, code, response.text[:400])
    if "search-type" in claimed:
        assert client.get(f"/fhir/{resource_type}?_id={rid}").json()["total"] == 1


def test_every_advertised_interaction_answers(client: TestClient) -> None:
    resources = entries(client)
    assert len(resources) == 147
    writable = generic(resources)
    ids = store_one_of_each(client, writable)  # the create interaction of each of them
    for entry in resources:
        resource_type = entry["type"]
        if resource_type not in ids:  # read-only: read and search
            assert codes(entry) == {"read", "search-type"}, resource_type
            # the audit trail is the audit administrator's to read
            read = audit_get if resource_type == "AuditEvent" else _plain_get
            search = read(client, f"/fhir/{resource_type}")
            assert search.status_code == 200, (resource_type, search.text[:300])
            found = [e for e in search.json().get("entry", []) if e["search"]["mode"] == "match"]
            assert found, resource_type  # audit events of the writes above; the definitions
            rid = found[-1]["resource"]["id"]
            assert read(client, f"/fhir/{resource_type}/{rid}").status_code == 200
            assert client.post(f"/fhir/{resource_type}", json=minimal(resource_type),
                               headers=FHIR_JSON).status_code == 405  # fmt: skip
            continue
        rid = ids[resource_type]
        _instance_interactions(client, entry, rid)
        if entry.get("conditionalCreate"):
            again = client.post(f"/fhir/{resource_type}", json=minimal(resource_type),
                                headers={**FHIR_JSON, "If-None-Exist": f"_id={rid}"})  # fmt: skip
            assert again.status_code == 200 and again.json()["id"] == rid, resource_type
        if entry.get("conditionalUpdate"):
            body = {**minimal(resource_type), "id": rid}
            updated = client.put(f"/fhir/{resource_type}?_id={rid}", json=body, headers=FHIR_JSON)
            assert updated.status_code == 200, (resource_type, updated.text[:300])
        if entry.get("conditionalDelete") == "single":
            deleted = client.delete(f"/fhir/{resource_type}?_id={rid}")
            assert deleted.status_code in {200, 204}, (resource_type, deleted.text[:300])
            assert client.get(f"/fhir/{resource_type}/{rid}").status_code == 410
        if "delete" in codes(entry):
            other = client.post(f"/fhir/{resource_type}", json=minimal(resource_type),
                                headers=FHIR_JSON).json()["id"]  # fmt: skip
            assert client.delete(f"/fhir/{resource_type}/{other}").status_code in {200, 204}
            assert client.get(f"/fhir/{resource_type}/{other}").status_code == 410
    system = {i["code"] for i in statement(client)["rest"][0]["interaction"]}
    assert system == {"transaction", "batch", "history-system"}
    for kind in ("transaction", "batch"):
        bundle = {"resourceType": "Bundle", "type": kind,
                  "entry": [{"request": {"method": "GET", "url": "metadata"}}]}  # fmt: skip
        response = client.post("/fhir", json=bundle, headers=FHIR_JSON)
        assert response.status_code == 200, (kind, response.text[:300])
    assert client.get("/fhir/_history").status_code == 200


def _plain_get(client: TestClient, path: str) -> Any:
    return client.get(path)


def _as_reader(services: Services, resource_type: str) -> dict[str, str]:
    """STRICT, and for the audit trail the audit administrator's token."""
    if resource_type != "AuditEvent":
        return STRICT
    return {**STRICT, **bearer(services.settings, AUDITOR_SCOPES)}


def search_value(services: Services, resource_type: str, param: dict[str, Any]) -> str:
    """A well-formed value of the parameter's type (and, composite, its parts')."""
    definition = services.registry.get(resource_type, param["name"])
    assert definition is not None, (resource_type, param["name"])
    values = {"token": "x", "string": "x", "date": "2024-01-02", "number": "1",
              "quantity": "1", "uri": "urn:x"}  # fmt: skip
    if param["type"] == "reference":
        return f"{definition.targets[0]}/x" if definition.targets else "x"
    if param["type"] == "composite":
        return "$".join(values.get(c.type, "x") for c in definition.components)
    return values[param["type"]]


def test_every_advertised_search_parameter_is_accepted_strictly(
    client: TestClient, services: Services
) -> None:
    refused = []
    searched = 0
    for entry in entries(client):
        resource_type = entry["type"]
        params = [(p["name"], search_value(services, resource_type, p))
                  for p in entry["searchParam"]]  # fmt: skip
        assert len({name for name, _ in params}) == len(params), resource_type
        headers = _as_reader(services, resource_type)
        response = client.get(f"/fhir/{resource_type}", params=params, headers=headers)
        searched += len(params)
        if response.status_code != 200:  # which ones: each alone
            for name, value in params:
                alone = client.get(f"/fhir/{resource_type}", params={name: value}, headers=headers)
                if alone.status_code != 200:
                    refused.append((resource_type, name, alone.text[:200]))
            refused.append((resource_type, "together", response.text[:200]))
    assert not refused
    assert searched > 2500  # every type's parameters were tried


def test_every_include_and_revinclude_value_is_accepted(client: TestClient) -> None:
    resources = entries(client)
    ids = store_one_of_each(client, generic(resources))
    listed = 0
    for entry in resources:
        resource_type = entry["type"]
        if resource_type not in ids:  # read-only types have searches of their own
            assert "searchInclude" not in entry and "searchRevInclude" not in entry
            continue
        assert f"{resource_type}:*" in entry["searchInclude"]
        for name, values in (("_include", entry["searchInclude"]),
                             ("_revinclude", entry.get("searchRevInclude", []))):  # fmt: skip
            listed += len(values)
            if not values:
                continue
            params = [("_id", ids[resource_type]), *((name, v) for v in values)]
            response = client.get(f"/fhir/{resource_type}", params=params, headers=STRICT)
            assert response.status_code == 200, (resource_type, name, response.text[:400])
            assert response.json()["total"] == 1
    assert listed > 1000


def test_includes_follow_the_references(client: TestClient) -> None:
    """What is listed finds something: Observation:subject and its reverse."""
    pid = client.post("/fhir/Patient", json=minimal("Patient"), headers=FHIR_JSON).json()["id"]
    observation = {**minimal("Observation"), "subject": {"reference": f"Patient/{pid}"}}
    oid = client.post("/fhir/Observation", json=observation, headers=FHIR_JSON).json()["id"]
    patient = next(e for e in entries(client) if e["type"] == "Patient")
    assert "Observation:subject" in patient["searchRevInclude"]
    back = client.get(f"/fhir/Patient?_id={pid}&_revinclude=Observation:subject").json()
    assert {e["resource"]["id"] for e in back["entry"]} == {pid, oid}
    forth = client.get(f"/fhir/Observation?_id={oid}&_include=Observation:subject").json()
    assert {e["resource"]["id"] for e in forth["entry"]} == {pid, oid}


def claimed_operations(client: TestClient) -> list[tuple[str | None, dict[str, Any]]]:
    rest = statement(client)["rest"][0]
    out: list[tuple[str | None, dict[str, Any]]] = [(None, o) for o in rest["operation"]]
    for entry in rest["resource"]:
        out += [(entry["type"], o) for o in entry.get("operation", [])]
    return out


def resolve(client: TestClient, url: str) -> dict[str, Any]:
    """The definition a canonical url names, through the search and the read."""
    found = client.get("/fhir/OperationDefinition", params={"url": url})
    assert found.status_code == 200 and found.json()["total"] == 1, url
    definition_id = found.json()["entry"][0]["resource"]["id"]
    read = client.get(f"/fhir/OperationDefinition/{definition_id}")
    assert read.status_code == 200, url
    definition: dict[str, Any] = read.json()
    assert definition["url"] == url
    return definition


def levels(definition: dict[str, Any]) -> list[str]:
    return [level for level in ("system", "type", "instance") if definition[level]]


def test_every_operation_answers_at_each_level_it_is_advertised(
    client: TestClient, services: Services
) -> None:
    claimed = claimed_operations(client)
    ids = store_one_of_each(client, generic(entries(client)))
    keys = SigningKeys(services.settings.signing_keys_dir)
    seal_all(Sealer(services.unit, keys, interval=0))  # for $inclusion-proof
    called = 0
    for resource_type, operation in claimed:
        definition = resolve(client, operation["definition"])
        assert definition["code"] == operation["name"]
        if resource_type is not None:
            assert set(definition["resource"]) & {resource_type, "Resource"}, operation
        for level in levels(definition):
            if (level == "system") != (resource_type is None):
                continue
            response, expected = call_operation(
                client, operation["name"], level, resource_type, ids
            )
            answered(response, f"{resource_type} ${operation['name']} ({level})")
            assert response.status_code == expected, (
                resource_type, operation["name"], level, response.text[:400]
            )  # fmt: skip
            called += 1
    assert called > 290  # $validate on every type, at two levels, and the others


def routed_operations(app: Any) -> set[tuple[str, str, str]]:
    """(level, type or '*', name) of every operation route of the application."""
    out = set()
    for route in app.routes:
        if not isinstance(route, APIRoute) or "$" not in route.path:
            continue
        match = re.fullmatch(
            r"/fhir(?:/([^/$]+))?(/\{resource_id\})?/\$([a-z-]+)(/.*)?", route.path
        )
        assert match is not None, route.path
        resource_type, instance, name, _rest = match.groups()
        assert route.name in INTERACTIONS, route.name  # audited as an operation
        if name in NOT_OPERATIONS:
            continue
        level = "system" if resource_type is None else "instance" if instance else "type"
        out.add((level, "*" if resource_type == "{resource_type}" else resource_type or "", name))
    return out


def test_the_routes_are_the_advertised_operations(client: TestClient) -> None:
    resources = entries(client)
    every = set(generic(resources))
    advertised: set[tuple[str, str, str]] = set()
    for resource_type, operation in claimed_operations(client):
        definition = resolve(client, operation["definition"])
        for level in levels(definition):
            if (level == "system") != (resource_type is None):
                continue
            where = "*" if "Resource" in definition.get("resource", []) else resource_type or ""
            advertised.add((level, where, operation["name"]))
    assert routed_operations(client.app) == advertised
    validated = {r["type"] for r in resources if any(o["name"] == "validate"
                                                     for o in r.get("operation", []))}  # fmt: skip
    assert validated == every  # $validate: every type with writes, not the read-only ones


def test_the_statement_and_the_definitions_are_valid_r4(client: TestClient) -> None:
    body = statement(client)
    CapabilityStatement.model_validate(body)
    validate_resource(body, expected_type="CapabilityStatement")
    assert body["instantiates"] == ["http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"]
    assert body["format"] == ["application/fhir+json", "application/fhir+xml"]
    everything = client.get("/fhir/OperationDefinition").json()
    definitions = [e["resource"] for e in everything["entry"]]
    assert everything["total"] == len(definitions) >= 17
    named = {o["definition"] for _, o in claimed_operations(client)}
    assert named == {d["url"] for d in definitions}  # each served one is used, and only those
    for definition in definitions:
        OperationDefinition.model_validate(definition)
        validate_resource(definition, expected_type="OperationDefinition")


@pytest.mark.parametrize("configured", [False, True])
def test_security_says_what_the_smart_configuration_says(
    make_client: Any, configured: bool
) -> None:
    settings: dict[str, Any] = (
        {"token_endpoint": "https://auth.example/token",
         "authorization_endpoint": "https://auth.example/authorize",
         "cors_origins": ["https://app.example"]}
        if configured else {}
    )  # fmt: skip
    client = make_client(**settings)
    security = statement(client)["rest"][0]["security"]
    smart = client.get("/.well-known/smart-configuration").json()
    assert security["service"][0]["coding"] == [
        {"system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
         "code": "SMART-on-FHIR"}
    ]  # fmt: skip
    assert security["cors"] is configured
    assert "ehr/audit" in security["description"]
    uris = {
        part["url"]: part["valueUri"]
        for extension in security.get("extension", [])
        if extension["url"].endswith("/oauth-uris")
        for part in extension["extension"]
    }
    fields = {"authorize": "authorization_endpoint", "token": "token_endpoint"}
    assert uris == {part: smart[field] for part, field in fields.items() if field in smart}
    assert bool(uris) is configured
    if configured:
        assert uris["token"] == "https://auth.example/token"
