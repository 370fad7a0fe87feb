"""Exhaustion limits: per-client request rate (429 + Retry-After) and the
database statement timeout (an OperationOutcome, not a 500)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from ehr_service.fhir.errors import FhirError
from ehr_service.storage.database import Database
from ehr_service.storage.unit_of_work import UnitOfWork


def test_rate_limit_per_client(make_client: Callable[..., TestClient]) -> None:
    client = make_client(rate_limit_per_minute=60, rate_limit_burst=3)
    statuses = [client.get("/fhir/Patient").status_code for _ in range(5)]
    assert statuses[:3] == [200, 200, 200]
    assert statuses[3:] == [429, 429]
    limited = client.get("/fhir/Patient")
    assert limited.headers["Retry-After"] == "1"
    assert limited.json()["issue"][0]["code"] == "throttled"
    assert client.get("/fhir/metadata").status_code == 200  # discovery is not limited


def test_statement_timeout_is_an_operation_outcome(database_url: str) -> None:
    database = Database(database_url, statement_timeout_ms=100)
    slow = (
        "SELECT pg_sleep(2)"
        if database.is_postgresql
        else "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000000)"
        " SELECT count(*) FROM n"
    )
    try:
        with pytest.raises(FhirError) as raised, UnitOfWork(database).read() as conn:
            conn.execute(sa.text(slow))
        assert raised.value.status == 503
        assert raised.value.issues[0].code == "too-costly"
        with UnitOfWork(database).read() as conn:  # the connection is usable again
            assert conn.execute(sa.text("SELECT 1")).scalar_one() == 1
    finally:
        database.dispose()
