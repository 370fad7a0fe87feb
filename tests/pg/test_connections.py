"""Pooled PostgreSQL connections: no ping per transaction, and a connection that
died while idle is replaced on checkout instead of failing the request."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from ehr_service.storage import database as database_module
from ehr_service.storage.database import Database
from ehr_service.storage.unit_of_work import UnitOfWork

pytestmark = pytest.mark.pg


def _backend(unit: UnitOfWork) -> int:
    with unit.read() as conn:
        return int(conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())


def test_a_connection_that_died_while_idle_is_replaced(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = Database(pg_url, pool_size=1)
    unit = UnitOfWork(database)
    try:
        first = _backend(unit)
        assert _backend(unit) == first  # pooled: the same connection again
        admin = sa.create_engine(pg_url)
        with admin.connect() as conn:
            conn.execute(sa.text("SELECT pg_terminate_backend(CAST(:p AS integer))"), {"p": first})
        admin.dispose()
        monkeypatch.setattr(database_module, "IDLE_PING_SECONDS", 0.0)
        second = _backend(unit)  # pinged on checkout, found dead, replaced
        assert second != first
    finally:
        database.dispose()


def test_busy_connections_are_not_pinged(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    database = Database(pg_url, pool_size=1)
    dialect = database.engine.dialect
    pings: list[object] = []
    ping = dialect.do_ping
    monkeypatch.setattr(dialect, "do_ping", lambda c: pings.append(c) or ping(c))
    try:
        unit = UnitOfWork(database)
        backends = {_backend(unit) for _ in range(5)}
        assert len(backends) == 1 and pings == []  # no round trip added per transaction
        monkeypatch.setattr(database_module, "IDLE_PING_SECONDS", 0.0)
        _backend(unit)
        assert len(pings) == 1  # idle (here: at all) connections are
    finally:
        database.dispose()
