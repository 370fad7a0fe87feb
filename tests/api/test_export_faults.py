"""Bulk export under faults: a shutdown mid-type, a restart, a full disk; expiry of
finished exports; /readyz and low disk space."""

from __future__ import annotations

import errno
import time
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ehr_service.interactions import bulk_export
from ehr_service.storage import bulk_export as store
from tests.helpers import FHIR_JSON, observation, patient

ASYNC = {"Prefer": "respond-async"}


def _observations(client: TestClient, n: int) -> None:
    pid = client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON).json()["id"]
    for _ in range(n):
        client.post("/fhir/Observation", json=observation(f"Patient/{pid}"), headers=FHIR_JSON)


def _kickoff(client: TestClient) -> str:
    response = client.get("/fhir/$export", params={"_type": "Observation"}, headers=ASYNC)
    assert response.status_code == 202, response.text
    return response.headers["Content-Location"].replace("http://testserver", "")


def _settled(client: TestClient, status_url: str) -> Any:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        response = client.get(status_url)
        if response.status_code != 202:
            return response
        time.sleep(0.05)
    raise AssertionError("the export did not settle")


def _page_then(monkeypatch: pytest.MonkeyPatch, action: Callable[[], None]) -> None:
    """The first page is read, then ``action`` happens (a SIGTERM, a full disk)."""
    real = store.page
    calls = {"n": 0}

    def page(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            action()
        return real(*args, **kwargs)

    monkeypatch.setattr(store, "page", page)
    monkeypatch.setattr(bulk_export, "PAGE", 2)


def test_a_shutdown_mid_type_fails_the_job_never_completes_it(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    _observations(client, 7)
    bulk = client.app.state.bulk  # type: ignore[attr-defined]
    _page_then(monkeypatch, lambda: setattr(bulk, "_stopping", True))  # as shutdown() does
    status_url = _kickoff(client)
    response = _settled(client, status_url)
    assert response.status_code == 500, response.text
    assert "stopped while exporting" in response.json()["issue"][0]["diagnostics"]
    job_id = status_url.rsplit("/", 1)[1]
    assert not (bulk.directory / job_id).exists()  # no partial file left


def test_a_full_disk_says_so_and_leaves_nothing(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    _observations(client, 5)

    def full() -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    _page_then(monkeypatch, full)
    status_url = _kickoff(client)
    response = _settled(client, status_url)
    assert response.status_code == 500
    assert "disk is full" in response.json()["issue"][0]["diagnostics"]
    bulk = client.app.state.bulk  # type: ignore[attr-defined]
    assert not (bulk.directory / status_url.rsplit("/", 1)[1]).exists()
    monkeypatch.undo()
    assert _settled(client, _kickoff(client)).status_code == 200  # the next one works


def test_a_restart_fails_unfinished_jobs_and_removes_their_files(client: TestClient) -> None:
    _observations(client, 2)
    bulk = client.app.state.bulk  # type: ignore[attr-defined]
    done_url = _kickoff(client)
    assert _settled(client, done_url).status_code == 200
    job_id = done_url.rsplit("/", 1)[1]
    with bulk.services.unit.write() as conn:  # as a killed process leaves it
        store.set_job(conn, job_id, state="running")
    bulk.recover()
    response = client.get(done_url)
    assert response.status_code == 500 and "stopped" in response.text
    assert not (bulk.directory / job_id).exists()


def test_finished_exports_expire(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(export_retention_hours=0.5 / 3600)  # half a second
    _observations(client, 2)
    first = _kickoff(client)
    assert _settled(client, first).status_code == 200
    bulk = client.app.state.bulk  # type: ignore[attr-defined]
    assert (bulk.directory / first.rsplit("/", 1)[1]).exists()
    time.sleep(0.7)
    second = _kickoff(client)  # each kick-off sweeps the expired ones
    assert client.get(first).status_code == 404
    assert not (bulk.directory / first.rsplit("/", 1)[1]).exists()
    assert _settled(client, second).status_code == 200


def test_readyz_reports_low_disk(make_client: Callable[..., TestClient]) -> None:
    ready = make_client().get("/readyz").json()
    assert ready["checks"]["disk"] is True and ready["checks"]["disk_free_mb"] > 0
    starved = make_client(min_free_disk_mb=10**9).get("/readyz")
    assert starved.status_code == 503 and starved.json()["checks"]["disk"] is False
