"""The scale-out layout (``ehr-service migrate --partitions N``, docs/scale.md): the
patient-owned tables hash-partitioned by compartment patient id. A resident's
whole record lands in one partition; a logical id stays unique across them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from ehr_service.app import build_services, create_app
from ehr_service.config import Settings
from ehr_service.fhir.primitives import utc_now
from ehr_service.interactions.context import Services
from ehr_service.storage import resources
from ehr_service.storage.database import Database
from ehr_service.storage.migrate import upgrade
from ehr_service.storage.partitioning import (
    CLAIM,
    PARTITIONED,
    PartitioningError,
    is_partitioned,
    partition,
)
from ehr_service.storage.resources import NewVersion
from tests.conftest import MIGRATIONS, _worker, fresh_database
from tests.helpers import FHIR_JSON, bearer, observation, patient

pytestmark = pytest.mark.pg


@pytest.fixture(scope="module")
def partitioned(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    """A database of its own, left for the next run to drop (dropping takes seconds)."""
    url = fresh_database(pg_url, f"partitioned_{_worker()}")
    database = Database(url)
    upgrade(database, MIGRATIONS)
    with database.engine.begin() as conn:
        assert partition(conn, 4) == list(PARTITIONED)
        assert partition(conn, 4) == []  # a second run finds nothing to do
    database.dispose()
    data_dir = tmp_path_factory.mktemp("partitioned")
    services = build_services(Settings(database_url=url, data_dir=data_dir, environment="test"))
    yield services
    services.database.dispose()


def _partitions_of(conn: sa.Connection, table: str, where: str, **values: str) -> set[str]:
    return set(
        conn.execute(
            sa.text(f"SELECT DISTINCT tableoid::regclass::text FROM {table} WHERE {where}"),
            values,
        ).scalars()
    )


def test_a_record_lives_in_one_partition_and_ids_stay_unique(partitioned: Services) -> None:
    services = partitioned
    with TestClient(create_app(services=services), headers=bearer(services.settings)) as client:
        pids = []
        for family in ("Wang", "Li", "Zhang"):
            response = client.post(
                "/fhir/Patient", json=patient(name=[{"family": family}]), headers=FHIR_JSON
            )
            assert response.status_code == 201, response.text
            pids.append(response.json()["id"])
        for pid in pids:
            for value in (5.1, 6.2, 7.3):
                body = observation(f"Patient/{pid}", value)
                assert (
                    client.post("/fhir/Observation", json=body, headers=FHIR_JSON).status_code
                    == 201
                )
        # a client-chosen id in the first record
        body = observation(f"Patient/{pids[0]}") | {"id": "chosen"}
        assert (
            client.put("/fhir/Observation/chosen", json=body, headers=FHIR_JSON).status_code == 201
        )

        with services.unit.read() as conn:
            assert is_partitioned(conn)
            for pid in pids:
                homes = set()
                for table in ("resource", "resource_version", "search_token", "search_reference"):
                    homes |= {
                        p.rsplit("_p", 1)[1]
                        for p in _partitions_of(conn, table, "compartment_patient_id = :p", p=pid)
                    }
                assert len(homes) == 1, homes  # the whole record: one partition number

        # Moving the resource to another record moves its row; the id is still one resource.
        moved = observation(f"Patient/{pids[1]}") | {"id": "chosen"}
        assert (
            client.put("/fhir/Observation/chosen", json=moved, headers=FHIR_JSON).status_code == 200
        )
        found = client.get(f"/fhir/Observation?patient={pids[1]}&_id=chosen").json()
        assert found["total"] == 1
        assert client.get(f"/fhir/Observation?patient={pids[0]}&_id=chosen").json()["total"] == 0
        assert client.get("/fhir/Observation/chosen").json()["meta"]["versionId"] == "2"

        with services.unit.read() as conn:
            claims = conn.execute(
                sa.text(f"SELECT count(*) FROM {CLAIM} WHERE res_id = 'chosen'")
            ).scalar_one()
            rows = conn.execute(
                sa.text("SELECT count(*) FROM resource WHERE res_id = 'chosen'")
            ).scalar_one()
        assert (claims, rows) == (1, 1)

        # The same id written into a third record by another path is refused by the claim.
        with services.unit.write() as conn:
            version = NewVersion(
                resource_type="Observation",
                resource_id="chosen",
                version_id=1,
                last_updated=utc_now(),
                method="PUT",
                compartment_patient_id=pids[2],
                content=b"{}",
            )
            assert resources.insert_if_absent(conn, version) is False
        with services.unit.write() as conn, pytest.raises(sa.exc.IntegrityError):
            resources.insert_new(conn, [version])
        with services.unit.read() as conn:
            assert (
                conn.execute(
                    sa.text("SELECT count(*) FROM resource WHERE res_id = 'chosen'")
                ).scalar_one()
                == 1
            )


def test_partitioning_needs_an_empty_database(partitioned: Services, pg_url: str) -> None:
    database = Database(pg_url)  # the suite's database: holds rows after a write
    try:
        with database.engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO consent_refusal (consent_id, actor, patient_id) "
                    "VALUES ('c1', '*', 'p1')"
                )
            )
        with database.engine.begin() as conn:
            if is_partitioned(conn):  # the suite itself runs partitioned: nothing to redo
                assert partition(conn, 4) == []
            else:
                with pytest.raises(PartitioningError, match="holds rows"):
                    partition(conn, 4)
        with database.engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM consent_refusal WHERE consent_id = 'c1'"))
    finally:
        database.dispose()
