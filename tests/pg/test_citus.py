"""The Citus layout (``ehr-service migrate --citus``, docs/scale.md) on a real
cluster (``EHR_TEST_CITUS_URL``, tests/citus_cluster.py): the tables are laid out
as designed, and the statements the service sends for a read by id, a
patient-scoped search and ``$everything`` each run as one task on one shard,
while a search over every record pushes down whole to each shard."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.exc import IntegrityError

from ehr_service.app import build_services, create_app
from ehr_service.config import Settings
from ehr_service.fhir.primitives import utc_now
from ehr_service.interactions.context import Services
from ehr_service.storage import resources
from ehr_service.storage.citus import COORDINATOR, DISTRIBUTED, REFERENCE, UNOWNED
from ehr_service.storage.resources import NewVersion
from tests.citus_cluster import CITUS_ONLY
from tests.conftest import truncate_all
from tests.helpers import FHIR_JSON, bearer, observation, patient

pytestmark = CITUS_ONLY


@pytest.fixture
def cluster(pg_url: str, tmp_path: Path) -> Iterator[tuple[TestClient, Services]]:
    truncate_all(pg_url)
    services = build_services(Settings(database_url=pg_url, data_dir=tmp_path, environment="test"))
    with TestClient(create_app(services=services), headers=bearer(services.settings)) as client:
        yield client, services
    services.database.dispose()


def _post(client: TestClient, path: str, body: dict[str, Any]) -> str:
    response = client.post(path, json=body, headers=FHIR_JSON)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _record(client: TestClient) -> tuple[list[str], str]:
    """Three residents with three laboratory results each, and an institution."""
    org = _post(client, "/fhir/Organization", {"resourceType": "Organization", "name": "H1"})
    pids = [_post(client, "/fhir/Patient", patient(name=[{"family": f}])) for f in "ABC"]
    for pid in pids:
        for value in (5.1, 6.2, 7.3):
            _post(client, "/fhir/Observation", observation(f"Patient/{pid}", value))
    return pids, org


class Recorder:
    """The SELECT statements the service sends while it is installed."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.statements: list[tuple[str, Any]] = []

    def __enter__(self) -> Recorder:
        sa.event.listen(self.engine, "before_cursor_execute", self._seen)
        return self

    def __exit__(self, *exc: object) -> None:
        sa.event.remove(self.engine, "before_cursor_execute", self._seen)

    def _seen(self, conn: Any, cursor: Any, statement: str, params: Any, *rest: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and not rest[-1]:
            self.statements.append((statement, params))


_RECORD_TABLES = re.compile(r"\b(?:FROM|JOIN) (?:resource|resource_version|search_[a-z]+)\b")


def _plans(services: Services, recorder: Recorder) -> list[str]:
    """EXPLAIN of each recorded SELECT that reads a table of the records."""
    plans = []
    with services.database.engine.connect() as conn:
        for statement, params in recorder.statements:
            if not _RECORD_TABLES.search(statement):
                continue
            rows = conn.exec_driver_sql("EXPLAIN " + statement, params).all()
            plans.append("\n".join(r[0] for r in rows))
    return plans


def _single_shard(plan: str) -> bool:
    return "Task Count: 1\n" in plan + "\n" and "Subplan" not in plan


def test_the_tables_are_laid_out_for_citus(cluster: tuple[TestClient, Services]) -> None:
    _client, services = cluster
    with services.database.engine.connect() as conn:
        layout = {
            r.table_name: (r.citus_table_type, r.distribution_column, r.colocation_id)
            for r in conn.execute(
                sa.text(
                    "SELECT table_name::text, citus_table_type, distribution_column, "
                    "colocation_id FROM citus_tables"
                )
            )
        }
        for table, column in DISTRIBUTED.items():
            kind, distributed_by, group = layout[table]
            assert (kind, distributed_by) == ("distributed", column)
            assert group == layout["resource"][2]  # one record, one shard
        assert layout["resource_id_claim"][:2] == ("distributed", "res_id")
        for table in REFERENCE:
            assert layout[table][0] == "reference"
        keys = conn.execute(
            sa.text(
                "SELECT conrelid::regclass::text, "
                "(SELECT attname FROM pg_attribute WHERE attrelid = conrelid "
                " AND attnum = conkey[1]) FROM pg_constraint "
                "WHERE contype IN ('p', 'u') AND conrelid::regclass::text = ANY(:t)"
            ),
            {"t": list(DISTRIBUTED)},
        ).all()
        assert keys and all(first == DISTRIBUTED[table] for table, first in keys)
        for table in COORDINATOR:  # on the coordinator, reachable from every node
            assert layout[table][0] == "local"


def test_read_search_and_everything_run_on_one_shard(
    cluster: tuple[TestClient, Services],
) -> None:
    client, services = cluster
    pids, org = _record(client)
    obs = client.get("/fhir/Observation", params={"subject": f"Patient/{pids[1]}"}).json()
    oid = obs["entry"][0]["resource"]["id"]
    calls = {
        "read": lambda: client.get(f"/fhir/Observation/{oid}"),
        "vread": lambda: client.get(f"/fhir/Observation/{oid}/_history/1"),
        "subject search": lambda: client.get(
            "/fhir/Observation",
            params={
                "subject": f"Patient/{pids[1]}",
                "code": "http://loinc.org|2345-7",
                "value-quantity": "gt1",
                "_sort": "-date",
            },
        ),
        # ``patient`` is one parameter of many types (a union expression)
        "patient search": lambda: client.get(
            "/fhir/Observation",
            params={"patient": f"Patient/{pids[1]}", "code": "http://loinc.org|2345-7"},
        ),
        "$everything": lambda: client.get(f"/fhir/Patient/{pids[1]}/$everything"),
    }
    for name, call in calls.items():
        with Recorder(services.database.engine) as recorder:
            response = call()
        assert response.status_code == 200, (name, response.text)
        plans = _plans(services, recorder)
        assert plans, name
        for plan in plans:
            assert _single_shard(plan), f"{name}:\n{plan}"
    everything = client.get(f"/fhir/Patient/{pids[1]}/$everything").json()
    assert sum(e["resource"]["resourceType"] == "Observation" for e in everything["entry"]) == 3
    # the institution lives outside every record, under the sentinel, and reads back
    assert client.get(f"/fhir/Organization/{org}").status_code == 200
    with services.database.engine.connect() as conn:
        owner = conn.execute(
            sa.text("SELECT compartment_patient_id FROM resource WHERE res_id = :i"), {"i": org}
        ).scalar_one()
    assert owner == UNOWNED


def test_a_search_over_every_record_pushes_down_to_every_shard(
    cluster: tuple[TestClient, Services],
) -> None:
    client, services = cluster
    _record(client)
    with services.database.engine.connect() as conn:
        shards = conn.execute(
            sa.text("SELECT shard_count FROM citus_tables WHERE table_name = 'resource'::regclass")
        ).scalar_one()
    with Recorder(services.database.engine) as recorder:
        response = client.get(
            "/fhir/Observation",
            params={"code": "http://loinc.org|2345-7", "value-quantity": "gt6", "_sort": "date"},
        )
    assert response.status_code == 200
    assert len(response.json()["entry"]) == 6  # 6.2 and 7.3 of each of three residents
    plans = _plans(services, recorder)
    assert plans
    for plan in plans:
        assert f"Task Count: {shards}" in plan and "Subplan" not in plan, plan


def test_ids_stay_unique_across_records_and_a_move_keeps_one_resource(
    cluster: tuple[TestClient, Services],
) -> None:
    client, services = cluster
    pids, _org = _record(client)
    body = observation(f"Patient/{pids[0]}") | {"id": "chosen"}
    assert client.put("/fhir/Observation/chosen", json=body, headers=FHIR_JSON).status_code == 201
    # the same id written straight into another record is refused by its claim
    stray = NewVersion(
        "Observation", "chosen", 1, utc_now(), "POST", pids[2], b'{"resourceType":"Observation"}'
    )
    with pytest.raises(IntegrityError), services.unit.write() as conn:
        resources.insert_new(conn, [stray])
    # moving it to another record: delete, insert and a claim update, history kept
    moved = observation(f"Patient/{pids[1]}") | {"id": "chosen"}
    response = client.put("/fhir/Observation/chosen", json=moved, headers=FHIR_JSON)
    assert response.status_code == 200, response.text
    assert client.get("/fhir/Observation/chosen/_history/1").status_code == 200
    history = client.get("/fhir/Observation/chosen/_history").json()
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["2", "1"]
    with services.database.engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT 'claim', compartment_patient_id FROM resource_id_claim WHERE res_id = "
                "'chosen' UNION ALL SELECT 'current', compartment_patient_id FROM resource "
                "WHERE res_id = 'chosen' UNION ALL SELECT DISTINCT 'versions', "
                "compartment_patient_id FROM resource_version WHERE res_id = 'chosen'"
            )
        ).all()
    assert sorted(rows) == [("claim", pids[1]), ("current", pids[1]), ("versions", pids[1])]
    found = client.get("/fhir/Observation", params={"subject": f"Patient/{pids[1]}"}).json()
    assert "chosen" in {e["resource"]["id"] for e in found["entry"]}
    assert client.delete("/fhir/Observation/chosen").status_code in (200, 204)
    assert client.get("/fhir/Observation/chosen").status_code == 410


def test_chains_and_has_push_down_and_includes_stay_in_the_record(
    cluster: tuple[TestClient, Services],
) -> None:
    client, services = cluster
    pids, _org = _record(client)
    with services.database.engine.connect() as conn:
        shards = conn.execute(
            sa.text("SELECT shard_count FROM citus_tables WHERE table_name = 'resource'::regclass")
        ).scalar_one()
    code = "http://loinc.org|2345-7"
    calls: dict[str, tuple[str, dict[str, str], int, bool]] = {
        # across records: one task per shard, each end of the chain on the same shard
        "chain": ("/fhir/Observation", {"subject.family": "B"}, 3, False),
        "_has": ("/fhir/Patient", {"_has:Observation:subject:code": code}, 3, False),
        # one record: its shard only, the included resources' too
        "_include": (
            "/fhir/Observation",
            {"subject": f"Patient/{pids[0]}", "_include": "Observation:subject"},
            4,
            True,
        ),
        "_revinclude": (
            "/fhir/Patient",
            {"_id": pids[0], "_revinclude": "Observation:subject"},
            4,
            True,
        ),
    }
    for name, (path, params, entries, one_shard) in calls.items():
        with Recorder(services.database.engine) as recorder:
            response = client.get(path, params=params)
        assert response.status_code == 200, (name, response.text)
        assert len(response.json().get("entry", [])) == entries, name
        plans = _plans(services, recorder)
        assert plans, name
        for plan in plans:
            if one_shard:
                assert _single_shard(plan), f"{name}:\n{plan}"
            else:
                assert f"Task Count: {shards}" in plan and "Subplan" not in plan, f"{name}:\n{plan}"
