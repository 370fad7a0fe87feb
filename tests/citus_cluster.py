"""Databases on a Citus cluster for the test suite (``EHR_TEST_CITUS_URL``).

The URL names a database on the coordinator that has the citus extension and
its worker nodes added (``citus_add_node``). Each database the suite makes is
created on every node (CREATE DATABASE propagated), gets the extension on each
node and the same workers, so the layout of ``ehr-service migrate --citus`` can
be applied to it (docs/scale.md).
"""

from __future__ import annotations

import os
import time

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL
from sqlalchemy.exc import OperationalError

CITUS_URL = os.environ.get("EHR_TEST_CITUS_URL", "")
# The marks of a module of Citus-only tests.
CITUS_ONLY = [
    pytest.mark.pg,
    pytest.mark.skipif(
        not CITUS_URL,
        reason="Citus tests skipped: set EHR_TEST_CITUS_URL to a Citus coordinator database "
        "with its workers added (e.g. postgresql://postgres@127.0.0.1:9700/ehr_test_citus)",
    ),
]
_NO_PROPAGATION = "SET citus.enable_create_database_propagation TO off"


def workers(admin: sa.Connection) -> list[tuple[str, int]]:
    rows = admin.execute(
        sa.text(
            "SELECT nodename, nodeport FROM pg_dist_node "
            "WHERE noderole = 'primary' AND groupid <> 0 ORDER BY nodeid"
        )
    ).all()
    return [(r.nodename, r.nodeport) for r in rows]


def _on_node(url: URL, *statements: str) -> None:
    node = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with node.connect() as conn:
            conn.execute(sa.text(_NO_PROPAGATION))
            for statement in statements:
                _retried(conn, statement)
    finally:
        node.dispose()


def create(admin_url: URL, name: str) -> None:
    """A new, empty Citus database ``name`` on the coordinator and every worker. Each
    node's database is made there, not through Citus's propagation of CREATE and
    DROP DATABASE, which is not transactional (a worker still holding a session of
    the coordinator's connection cache fails one node's part and leaves the rest)."""
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        nodes = workers(conn)
        coordinator = conn.execute(
            sa.text("SELECT nodename, nodeport FROM pg_dist_node WHERE groupid = 0")
        ).first()
    admin.dispose()
    drop(admin_url, [name], nodes)
    for node_url in [admin_url, *(admin_url.set(host=h, port=p) for h, p in nodes)]:
        _on_node(node_url, f'CREATE DATABASE "{name}"')
        _on_node(node_url.set(database=name), "CREATE EXTENSION IF NOT EXISTS citus")
    made = sa.create_engine(admin_url.set(database=name), isolation_level="AUTOCOMMIT")
    with made.connect() as conn:
        if coordinator is not None:
            conn.execute(
                sa.text("SELECT citus_set_coordinator_host(:h, :p)"),
                {"h": coordinator.nodename, "p": coordinator.nodeport},
            )
        for host, port in nodes:
            conn.execute(sa.text("SELECT citus_add_node(:h, :p)"), {"h": host, "p": port})
    made.dispose()


def drop(admin_url: URL, names: list[str], nodes: list[tuple[str, int]] | None = None) -> None:
    """DROP DATABASE of each name on every node."""
    if nodes is None:
        admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            nodes = workers(conn)
        admin.dispose()
    for node_url in [admin_url, *(admin_url.set(host=h, port=p) for h, p in nodes)]:
        _on_node(node_url, *(f'DROP DATABASE IF EXISTS "{n}" WITH (FORCE)' for n in names))


def _retried(conn: sa.Connection, statement: str) -> None:
    """A node may still hold a session of another node's connection cache for a
    moment after FORCE ended it."""
    for attempt in range(20):
        try:
            conn.execute(sa.text(statement))
            return
        except OperationalError:
            if attempt == 19:
                raise
            time.sleep(0.5)
