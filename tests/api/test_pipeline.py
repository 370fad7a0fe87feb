"""One write pipeline: every path that stores a version runs the same hooks, in
the order the application registers them."""

from __future__ import annotations

import io
from pathlib import Path

import orjson
from fastapi.testclient import TestClient

from ehr_service.interactions.context import RequestContext, Services
from ehr_service.interactions.importing import Importer
from ehr_service.pipeline import Deletion, Draft, Hook, Stage
from ehr_service.security.caller import SERVICE
from tests.helpers import FHIR_JSON, lab, organization, patient

EXPECTED_ORDER = [
    ("RESOURCE", "institution-master-data"),
    ("RESOURCE", "institution-cache"),
    ("RESOURCE", "institution-remark"),
    ("RESOURCE", "recognition-mark"),
    ("SEAL", "resident-identity"),
    ("OWNER", "own-record-only"),
    ("VERSION", "consent-refusals"),
    ("VERSION", "exchange-outbox"),
    ("VERSION", "metrics"),
    ("DELETE", "institution-cache"),
]


def test_the_hooks_and_their_order(services: Services) -> None:
    assert services.pipeline.hook_names() == EXPECTED_ORDER


def test_every_write_path_runs_the_hooks(
    client: TestClient, services: Services, tmp_path: Path
) -> None:
    seen: list[tuple[str, str, str]] = []

    def spy(draft: Draft) -> None:
        seen.append((draft.method, draft.resource_type, draft.resource_id))

    def spy_deletion(gone: Deletion) -> None:
        seen.append(("DELETE", gone.resource_type, gone.resource_id))

    services.pipeline.register(
        Hook("spy", Stage.VERSION, spy), Hook("spy", Stage.DELETE, spy_deletion)
    )
    org = organization("pipe-h1")
    assert client.put("/fhir/Organization/pipe-h1", json=org, headers=FHIR_JSON).status_code == 201
    pid = client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON).json()["id"]
    result = client.post(
        "/fhir/Observation", json=lab(pid, "2345-7", "2026-03-01", "pipe-h1"), headers=FHIR_JSON
    ).json()
    client.patch(
        f"/fhir/Patient/{pid}",
        json=[{"op": "replace", "path": "/gender", "value": "male"}],
        headers={"Content-Type": "application/json-patch+json"},
    )
    for kind in ("transaction", "batch"):
        bundle = {
            "resourceType": "Bundle",
            "type": kind,
            "entry": [{"resource": patient(), "request": {"method": "POST", "url": "Patient"}}],
        }
        assert client.post("/fhir", json=bundle, headers=FHIR_JSON).status_code == 200
    (tmp_path / "p.ndjson").write_bytes(orjson.dumps({**patient(), "id": "pipe-imported"}))
    ctx = RequestContext(services, "http://testserver/fhir", caller=SERVICE)
    Importer(ctx, io.StringIO()).run([tmp_path / "p.ndjson"])
    # the institution's quality control lapses: its result is re-marked, a new version
    lapsed = organization("pipe-h1", passed=False)
    assert (
        client.put("/fhir/Organization/pipe-h1", json=lapsed, headers=FHIR_JSON).status_code == 200
    )
    client.delete(f"/fhir/Observation/{result['id']}")
    methods = {(m, t) for m, t, _ in seen}
    assert {
        ("PUT", "Organization"),
        ("POST", "Patient"),
        ("POST", "Observation"),
        ("PATCH", "Patient"),
        ("DELETE", "Observation"),
    } <= methods
    assert ("PUT", "Patient", "pipe-imported") in seen  # import
    assert seen.count(("PUT", "Observation", result["id"])) == 1  # the re-marking
    assert sum(1 for m, t, _ in seen if (m, t) == ("POST", "Patient")) == 3  # + both bundles
