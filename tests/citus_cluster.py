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

import sqlalchemy as sa
from sqlalchemy.engine import URL
from sqlalchemy.exc import OperationalError

CITUS_URL = os.environ.get("EHR_TEST_CITUS_URL", "")
_PROPAGATE = "SET citus.enable_create_database_propagation TO on"


def workers(admin: sa.Connection) -> list[tuple[str, int]]:
    rows = admin.execute(
        sa.text(
            "SELECT nodename, nodeport FROM pg_dist_node "
            "WHERE noderole = 'primary' AND groupid <> 0 ORDER BY nodeid"
        )
    ).all()
    return [(r.nodename, r.nodeport) for r in rows]


def create(admin_url: URL, name: str) -> None:
    """A new, empty Citus database ``name`` on the coordinator and every worker."""
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        nodes = workers(conn)
        coordinator = conn.execute(
            sa.text("SELECT nodename, nodeport FROM pg_dist_node WHERE groupid = 0")
        ).first()
        conn.execute(sa.text(_PROPAGATE))
        _drop(conn, name)
    admin.dispose()
    for host, port in nodes:  # one a run left on a worker only (not dropped from there)
        node = sa.create_engine(admin_url.set(host=host, port=port), isolation_level="AUTOCOMMIT")
        with node.connect() as conn:
            _drop(conn, name)
        node.dispose()
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(_PROPAGATE))
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    for host, port in nodes:
        node = sa.create_engine(
            admin_url.set(host=host, port=port, database=name), isolation_level="AUTOCOMMIT"
        )
        with node.connect() as conn:
            conn.execute(sa.text("CREATE EXTENSION IF NOT EXISTS citus"))
        node.dispose()
    made = sa.create_engine(admin_url.set(database=name), isolation_level="AUTOCOMMIT")
    with made.connect() as conn:
        conn.execute(sa.text("CREATE EXTENSION IF NOT EXISTS citus"))
        if coordinator is not None:
            conn.execute(
                sa.text("SELECT citus_set_coordinator_host(:h, :p)"),
                {"h": coordinator.nodename, "p": coordinator.nodeport},
            )
        for host, port in nodes:
            conn.execute(sa.text("SELECT citus_add_node(:h, :p)"), {"h": host, "p": port})
    made.dispose()


def drop(admin_url: URL, names: list[str]) -> None:
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(_PROPAGATE))
        for name in names:
            _drop(conn, name)
    admin.dispose()


def _drop(conn: sa.Connection, name: str) -> None:
    """DROP DATABASE on every node; a worker may still hold a session of the
    coordinator's connection cache for a moment after FORCE ended it."""
    for attempt in range(20):
        try:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            return
        except OperationalError:
            if attempt == 19:
                raise
            time.sleep(0.5)
