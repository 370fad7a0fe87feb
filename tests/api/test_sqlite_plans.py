"""On SQLite the exact-value searches look rows up by the index key expressions
(``substr(col, 1, 200)``) and not only by type and parameter, which would scan
every value of the parameter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from ehr_service.app import build_services
from ehr_service.config import Settings
from ehr_service.fhir.search.query import SearchParser
from ehr_service.interactions.context import Services
from ehr_service.storage import search_queries
from ehr_service.storage.migrate import upgrade
from ehr_service.storage.search_sql import SearchCompiler
from tests.conftest import MIGRATIONS


@pytest.fixture
def sqlite_services(tmp_path: Path) -> Services:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'plans.sqlite3'}",
                        data_dir=tmp_path / "data", environment="test")  # fmt: skip
    services = build_services(settings)
    upgrade(services.database, MIGRATIONS)
    return services


def _plan(services: Services, resource_type: str, query: dict[str, list[str]]) -> str:
    request = SearchParser(services.registry).parse(resource_type, query)
    where = SearchCompiler("http://x/fhir").where(resource_type, request.criteria)
    statement: sa.Select[Any] = search_queries.page_statement(where, [], limit=51)
    with services.unit.read() as conn:
        compiled = statement.compile(
            dialect=conn.dialect, compile_kwargs={"render_postcompile": True}
        )
        params = tuple(compiled.params[name] for name in compiled.positiontup or ())
        rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + compiled.string, params).all()
    return "\n".join(str(r[-1]) for r in rows)


@pytest.mark.parametrize(
    ("resource_type", "query", "index"),
    [
        ("Patient", {"identifier": ["urn:mrn|A1"]}, "ix_search_token_code"),
        ("Observation", {"code": ["http://loinc.org|2345-7"]}, "ix_search_token_code"),
        ("Patient", {"family:exact": ["Wan"]}, "ix_search_string_value"),
    ],
)
def test_exact_values_are_looked_up_by_their_key(
    sqlite_services: Services, resource_type: str, query: dict[str, list[str]], index: str
) -> None:
    plan = _plan(sqlite_services, resource_type, query)
    used = next((line for line in plan.splitlines() if index in line), "")
    assert "<expr>=?" in used, plan
