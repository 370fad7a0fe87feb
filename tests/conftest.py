"""Fixtures: every API test runs on SQLite and on a real PostgreSQL.

PostgreSQL tests need ``EHR_TEST_DATABASE_URL`` (CI sets it). Without it they
skip with a reason locally and fail under ``CI=true``. Each xdist worker gets a
database of its own, derived from that URL.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from ehr_service.app import build_services, create_app
from ehr_service.audit.chain import verify
from ehr_service.audit.sealing import Sealer
from ehr_service.config import PROJECT_ROOT, Settings
from ehr_service.exchange.keys import SigningKeys
from ehr_service.interactions.context import Services
from ehr_service.storage.citus import distribute
from ehr_service.storage.database import Database, normalise_url
from ehr_service.storage.migrate import upgrade
from ehr_service.storage.partitioning import CLAIM, partition
from ehr_service.storage.tables import metadata
from ehr_service.storage.unit_of_work import UnitOfWork
from tests import citus_cluster
from tests.helpers import bearer, seal_all

MIGRATIONS = PROJECT_ROOT / "migrations"
BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="pg", marks=pytest.mark.pg),
]
BASE = "http://testserver/fhir"
AUDIT_TABLES = {"audit_event", "audit_head", "audit_access", "audit_block", "audit_segment"}
# EHR_TEST_PARTITIONS=N: PostgreSQL databases hash-partitioned into N (CI runs the
# PostgreSQL tests a second time that way).
PARTITIONS = int(os.environ.get("EHR_TEST_PARTITIONS", "0"))
# EHR_TEST_CITUS_URL: the PostgreSQL tests run on a Citus cluster in the layout of
# ``migrate --citus`` (its coordinator; tests/citus_cluster.py), in place of
# EHR_TEST_DATABASE_URL.
CITUS = bool(citus_cluster.CITUS_URL)


def _worker() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


# Databases made by this run, dropped when it ends (none left behind).
_MADE: set[str] = set()


def fresh_database(url: str, suffix: str) -> str:
    """An empty database named after the one in ``url`` plus ``suffix``; its URL."""
    parsed = make_url(normalise_url(url))
    name = f"{parsed.database}_{suffix}"
    _MADE.add(name)
    if CITUS:
        citus_cluster.create(parsed, name)
        return parsed.set(database=name).render_as_string(hide_password=False)
    admin = sa.create_engine(parsed, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return parsed.set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    url = citus_cluster.CITUS_URL or os.environ.get("EHR_TEST_DATABASE_URL")
    if not url:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true but EHR_TEST_DATABASE_URL is not set: PostgreSQL tests must run")
        pytest.skip(
            "PostgreSQL tests skipped: set EHR_TEST_DATABASE_URL "
            "(e.g. postgresql://postgres@127.0.0.1:5432/ehr_test) to run them"
        )
    worker_url = fresh_database(url, _worker())
    database = Database(worker_url)
    upgrade(database, MIGRATIONS)
    if PARTITIONS:  # the scale-out layout (docs/scale.md): the same suite must pass on it
        with database.engine.begin() as conn:
            partition(conn, PARTITIONS)
    if CITUS:  # the Citus layout (docs/scale.md): the same suite must pass on it
        with database.engine.begin() as conn:
            distribute(conn)
    database.dispose()
    yield worker_url
    # The audit chain is never truncated between tests: after the whole suite has run
    # against this database, every event must be sealed in order and verify (each
    # test's blocks are signed by that test's key: signatures are checked there).
    database = Database(worker_url)
    try:
        with tempfile.TemporaryDirectory() as keys_dir:
            keys = SigningKeys(Path(keys_dir))
            keys.ensure_active()
            seal_all(Sealer(UnitOfWork(database), keys, interval=0))
        verdict = verify(UnitOfWork(database))
    finally:
        database.dispose()
    assert verdict.intact, f"audit chain broken at {verdict.first_bad}: {verdict.reason}"
    assert verdict.unsealed == 0 and (verdict.blocks > 0 or verdict.events == 0)
    _drop_made(url)


# Directories test modules make at import (tests/api/test_schemathesis.py): removed
# when each session ends, in xdist workers too (they leave without running atexit).
TEMP_DIRS: list[Path] = []


def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    for path in TEMP_DIRS:
        shutil.rmtree(path, ignore_errors=True)


def _drop_made(url: str) -> None:
    if CITUS:
        citus_cluster.drop(make_url(normalise_url(url)), sorted(_MADE))
        _MADE.clear()
        return
    admin = sa.create_engine(make_url(normalise_url(url)), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for name in sorted(_MADE):
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()
    _MADE.clear()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Expected skips as one line per reason, not one line per test (``-ra`` would
    list every PostgreSQL test when no PostgreSQL is configured)."""
    reasons: dict[str, int] = {}
    for report in terminalreporter.stats.get("skipped", []):
        longrepr = report.longrepr
        reason = str(longrepr[2]) if isinstance(longrepr, tuple) else str(longrepr)
        reason = reason.removeprefix("Skipped: ")
        reasons[reason] = reasons.get(reason, 0) + 1
    for reason, count in sorted(reasons.items(), key=lambda item: -item[1]):
        terminalreporter.write_line(f"{count} skipped: {reason}")


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "ehr.sqlite3"
    database = Database(f"sqlite:///{path}")
    upgrade(database, MIGRATIONS)
    database.dispose()
    return path


def truncate_all(url: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        names = ", ".join(
            [t.name for t in metadata.sorted_tables if t.name not in AUDIT_TABLES]
            + ([CLAIM] if PARTITIONS or CITUS else [])
        )
        if (PARTITIONS or CITUS) and conn.execute(
            sa.text(f"SELECT to_regclass('{CLAIM}')")
        ).scalar() is None:  # a database of the plain layout (a second region's)
            names = names.removesuffix(f", {CLAIM}")
        conn.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY"))
    engine.dispose()


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        target = tmp_path / "ehr.sqlite3"
        shutil.copyfile(template, target)
        return f"sqlite:///{target}"
    url: str = request.getfixturevalue("pg_url")
    truncate_all(url)
    return url


@pytest.fixture
def make_services(database_url: str, tmp_path: Path) -> Iterator[Callable[..., Services]]:
    made: list[Services] = []

    def factory(**overrides: Any) -> Services:
        fields: dict[str, Any] = {"environment": "test", **overrides}
        settings = Settings(database_url=database_url, data_dir=tmp_path / "data", **fields)
        services = build_services(settings)
        made.append(services)
        return services

    yield factory
    for services in made:
        services.database.dispose()


@pytest.fixture
def services(make_services: Callable[..., Services]) -> Services:
    return make_services()


@pytest.fixture
def make_client(make_services: Callable[..., Services]) -> Iterator[Callable[..., TestClient]]:
    clients: list[TestClient] = []

    def factory(**overrides: Any) -> TestClient:
        made = make_services(**overrides)
        client = TestClient(
            create_app(services=made), raise_server_exceptions=False, headers=bearer(made.settings)
        )
        client.__enter__()
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(services: Services) -> Iterator[TestClient]:
    with TestClient(
        create_app(services=services),
        raise_server_exceptions=False,
        headers=bearer(services.settings),
    ) as test_client:
        yield test_client


def samples_dirs() -> list[Path]:
    """Synthea bundles: the copy in the repo, plus EHR_SAMPLES_DIR (or ../shared)."""
    dirs = [PROJECT_ROOT / "tests" / "data" / "synthea"]
    configured = os.environ.get("EHR_SAMPLES_DIR")
    shared = Path(configured) if configured else PROJECT_ROOT.parent / "shared/samples/synthea-r4"
    if shared.is_dir():
        dirs.append(shared)
    return dirs


def sample_bundles() -> list[Path]:
    seen: dict[str, Path] = {}
    for directory in samples_dirs():
        for path in sorted(directory.glob("*.json")):
            seen.setdefault(path.name, path)
    return list(seen.values())
