"""Writes through every node of a Citus cluster (docs/scale.md, "Many machines"):
services connected to the coordinator and to each worker take concurrent writes
from many clients. Logical ids stay unique, every audit event is sealed once into
one chain that verifies, and the exchange feed, read through a worker while the
writes go on, never passes a row: the outbox is stamped on the coordinator."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from ehr_service.app import build_services, create_app
from ehr_service.config import Settings
from ehr_service.fhir.primitives import utc_now
from ehr_service.interactions.context import Services
from ehr_service.storage import exchange as exchange_store
from tests import citus_cluster
from tests.api.test_exchange import Partner, add_sichuan, final_lab
from tests.conftest import truncate_all
from tests.helpers import FHIR_JSON, bearer, seal_and_verify

pytestmark = citus_cluster.CITUS_ONLY

CLIENTS = 24  # 8 per node
ROUNDS = 3
NODE_RANGE = 1 << 48  # Citus: a worker's sequences hand out group id << 48 onwards


@pytest.fixture
def nodes(pg_url: str, tmp_path: Path) -> Iterator[list[tuple[TestClient, Services]]]:
    """One service per node (coordinator first), all of one deployment (one data
    directory: the same signing keys), and the partner they share results with."""
    truncate_all(pg_url)
    url = make_url(pg_url)
    admin = sa.create_engine(url)
    with admin.connect() as conn:
        workers = citus_cluster.workers(conn)
    admin.dispose()
    assert len(workers) >= 2, "the cluster needs two workers"
    urls = [pg_url] + [
        url.set(host=host, port=port).render_as_string(hide_password=False)
        for host, port in workers
    ]
    made = []
    for node_url in urls:
        settings = Settings(
            database_url=node_url,
            data_dir=tmp_path / "data",
            environment="test",
            exchange_id="chongqing",
        )
        services = build_services(settings)
        client = TestClient(create_app(services=services), headers=bearer(settings))
        client.__enter__()
        made.append((client, services))
    partner = Partner(tmp_path)
    add_sichuan(made[0][1], partner, ["Observation"])
    yield made
    for client, services in made:
        client.__exit__(None, None, None)
        services.database.dispose()


def _write(client: TestClient) -> list[tuple[str, int]]:
    """A resident and their results, each updated once: (id, version) of results."""
    response = client.post("/fhir/Patient", json={"resourceType": "Patient"}, headers=FHIR_JSON)
    assert response.status_code == 201, response.text
    pid = response.json()["id"]
    written = []
    for _ in range(ROUNDS):
        created = client.post("/fhir/Observation", json=final_lab(pid), headers=FHIR_JSON)
        assert created.status_code == 201, created.text
        body = created.json()
        written.append((body["id"], 1))
        updated = client.put(
            f"/fhir/Observation/{body['id']}",
            json=body | {"valueQuantity": {"value": 6.1, "unit": "mmol/L"}},
            headers=FHIR_JSON,
        )
        assert updated.status_code == 200, updated.text
        written.append((body["id"], 2))
    return written


def _read_feed(services: Services, stop: threading.Event) -> list[dict[str, Any]]:
    """Follow the partner's feed cursor, as its puller would, until ``stop`` and then
    until it holds as many rows as the outbox (or a minute has passed: a row the
    cursor passed is never seen). The settle rule holds rows back while any older
    transaction of the cluster is open, another test worker's too."""
    seen: list[dict[str, Any]] = []
    cursor = 0
    deadline = None
    while True:
        with services.unit.read() as conn:
            rows = exchange_store.feed_rows(
                conn, "sichuan", after=cursor, since=None, before=utc_now(), limit=50
            )
            total = conn.execute(sa.text("SELECT count(*) FROM exchange_outbox")).scalar_one()
        seen.extend(rows)
        if rows:
            cursor = int(rows[-1]["seq"])
            continue
        if stop.is_set():
            deadline = deadline or time.monotonic() + 60
            if len(seen) >= total or time.monotonic() > deadline:
                return seen
        time.sleep(0.05)


def test_writes_through_every_node_keep_ids_audit_and_feed_whole(
    nodes: list[tuple[TestClient, Services]],
) -> None:
    coordinator = nodes[0][1]
    stop = threading.Event()
    with ThreadPoolExecutor(CLIENTS + 1) as pool:
        feed = pool.submit(_read_feed, nodes[-1][1], stop)  # read through a worker
        writes = [pool.submit(_write, nodes[i % len(nodes)][0]) for i in range(CLIENTS)]
        written = [key for future in writes for key in future.result()]
        stop.set()
        seen = feed.result()

    # every result version reached the partner's feed once, in the coordinator's
    # commit order (its transaction ids) and numbered by the coordinator
    assert len(written) == CLIENTS * ROUNDS * 2
    keys = [(r["res_id"], r["version_id"]) for r in seen]
    assert len(keys) == len(set(keys))
    assert sorted(keys) == sorted(written)
    order = [(r["txid"], r["seq"]) for r in seen]
    assert order == sorted(order)
    assert all(r["seq"] < NODE_RANGE for r in seen)

    with coordinator.database.engine.connect() as conn:
        # the writes came through every node (each node's range of version numbers)
        nodes_used = conn.execute(
            sa.text("SELECT count(DISTINCT seq >> 48) FROM resource_version")
        ).scalar_one()
        claims = conn.execute(sa.text("SELECT count(*) FROM resource_id_claim")).scalar_one()
        current = conn.execute(sa.text("SELECT count(*) FROM resource")).scalar_one()
        records = conn.execute(
            sa.text("SELECT count(*) FROM resource WHERE res_type IN ('Patient', 'Observation')")
        ).scalar_one()
        events = conn.execute(
            sa.text("SELECT count(*), count(DISTINCT seq >> 48) FROM audit_event")
        ).one()
    assert nodes_used == len(nodes)
    assert claims == current and records == CLIENTS * (1 + ROUNDS)
    assert events[1] == len(nodes) and events[0] >= CLIENTS * (1 + 2 * ROUNDS)

    # each node reads what another wrote
    some = written[0][0]
    for client, _services in nodes:
        response = client.get(f"/fhir/Observation/{some}")
        assert response.status_code == 200 and response.json()["meta"]["versionId"] == "2"

    # the type's history, paged through a worker: newest first across every node's
    # writes (not by each node's range of version numbers), each version once
    versions: list[tuple[str, str, str]] = []
    url: str | None = "/fhir/Observation/_history?_count=20"
    while url:
        page = nodes[1][0].get(url)
        assert page.status_code == 200, page.text
        bundle = page.json()
        versions.extend(
            (
                e["resource"]["meta"]["lastUpdated"],
                e["resource"]["id"],
                e["resource"]["meta"]["versionId"],
            )
            for e in bundle.get("entry", [])
        )
        url = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)
    assert sorted((i, int(v)) for _, i, v in versions) == sorted(written)
    stamps = [datetime.fromisoformat(t) for t, _, _ in versions]
    assert stamps == sorted(stamps, reverse=True)

    # one chain over what every node's sealer sealed, each event once (the blocks of
    # earlier tests on this database are signed by their keys: chain checked here)
    verdict = seal_and_verify(coordinator, signatures=False)
    assert verdict.intact, (verdict.first_bad, verdict.reason)
    with coordinator.database.engine.connect() as conn:
        chained = conn.execute(
            sa.text(
                "SELECT count(*), count(DISTINCT position) FROM audit_event "
                "WHERE position IS NOT NULL"
            )
        ).one()
    assert verdict.unsealed == 0 and chained[0] == chained[1] >= events[0]
