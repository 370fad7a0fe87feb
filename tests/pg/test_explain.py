"""On PostgreSQL (marked pg) the typical searches are answered from indexes, not table scans.

With ``enable_seqscan`` off the planner still picks a sequential scan when no
index can serve a condition, so a "Seq Scan" in the plan means a missing index.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from ehr_service.app import build_services, create_app
from ehr_service.config import Settings
from ehr_service.fhir.search.query import SearchParser
from ehr_service.interactions.context import Services
from ehr_service.storage import search_queries
from ehr_service.storage.search_sql import SearchCompiler
from tests.conftest import CITUS, sample_bundles, truncate_all
from tests.helpers import FHIR_JSON, bearer

pytestmark = [
    pytest.mark.pg,
    pytest.mark.skipif(
        CITUS, reason="plain-layout plans: on Citus the plans are checked by tests/pg/test_citus.py"
    ),
]

LARGE_TABLES = ("resource", "search_token", "search_reference", "search_date", "search_string")


@pytest.fixture
def pg_services(pg_url: str, tmp_path: Path) -> Iterator[Services]:
    truncate_all(pg_url)
    services = build_services(Settings(database_url=pg_url, data_dir=tmp_path, environment="test"))
    with TestClient(create_app(services=services), headers=bearer(services.settings)) as client:
        for path in sample_bundles()[:2]:
            client.post("/fhir", content=path.read_bytes(), headers=FHIR_JSON)
    yield services
    services.database.dispose()


def _plan(services: Services, statement: sa.Select[Any]) -> str:
    with services.unit.read() as conn:
        conn.exec_driver_sql("ANALYZE")
        conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        compiled = statement.compile(
            dialect=conn.dialect, compile_kwargs={"render_postcompile": True}
        )
        rows = conn.exec_driver_sql("EXPLAIN " + compiled.string, compiled.params).all()
    return "\n".join(r[0] for r in rows)


def _search_statement(
    services: Services, resource_type: str, query: dict[str, list[str]]
) -> sa.Select[Any]:
    request = SearchParser(services.registry).parse(resource_type, query)
    where = SearchCompiler("http://x/fhir").where(resource_type, request.criteria)
    return search_queries.page_statement(where, [], limit=51)


@pytest.mark.parametrize(
    ("resource_type", "query"),
    [
        (
            "Observation",
            {
                "patient": ["Patient/p1"],
                "code": ["http://loinc.org|2345-7"],
                "date": ["ge2020-01-01"],
            },
        ),
        ("Patient", {"identifier": ["urn:mrn|A1"]}),
        ("Patient", {"family": ["wan"]}),
    ],
)
def test_typical_searches_use_indexes(
    pg_services: Services, resource_type: str, query: dict[str, list[str]]
) -> None:
    plan = _plan(pg_services, _search_statement(pg_services, resource_type, query))
    for table in LARGE_TABLES:
        assert f"Seq Scan on {table}" not in plan, plan


def test_revinclude_uses_indexes(pg_services: Services) -> None:
    statement = search_queries.referring_statement(
        "Observation", "subject", "Patient", ["p1", "p2"]
    )
    plan = _plan(pg_services, statement)
    assert "Seq Scan" not in plan, plan
    assert "Index" in plan, plan
