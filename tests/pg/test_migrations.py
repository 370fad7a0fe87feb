"""Migrations run up and down on both backends, and `migrate` is idempotent."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from ehr_service.storage.database import Database
from ehr_service.storage.migrate import downgrade, is_at_head, upgrade
from tests.conftest import BACKENDS, MIGRATIONS, _worker, fresh_database


@pytest.fixture(params=BACKENDS)
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
    return fresh_database(request.getfixturevalue("pg_url"), f"fresh_{_worker()}")


def test_upgrade_downgrade_upgrade(empty_database: str) -> None:
    database = Database(empty_database)
    try:
        assert not is_at_head(database, MIGRATIONS)
        upgrade(database, MIGRATIONS)
        assert is_at_head(database, MIGRATIONS)
        upgrade(database, MIGRATIONS)  # idempotent
        tables = set(sa.inspect(database.engine).get_table_names())
        assert {"resource", "resource_version", "alembic_version"} <= tables
        downgrade(database, MIGRATIONS, "base")
        assert "resource" not in set(sa.inspect(database.engine).get_table_names())
        upgrade(database, MIGRATIONS)
        assert is_at_head(database, MIGRATIONS)
    finally:
        database.dispose()
