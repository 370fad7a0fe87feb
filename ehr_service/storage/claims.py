"""Logical-id claims of the Citus layout (storage.citus, docs/scale.md).

``resource_id_claim`` holds one row per (type, id) with the record it lives in,
distributed by the id. The application writes it in the transaction that
writes the resource (no triggers): its primary key keeps a logical id unique
across shards, and its lookup turns a read, vread, update or delete by type and
id into one single-shard query on the resource's record.

Moving a resource to another record (a changed subject, ``Patient/$merge``) is
never an update of the distribution column: the current row and the history are
deleted from the old record and inserted into the new one, and the claim is
updated, all in the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    MetaData,
    String,
    Table,
    and_,
    delete,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql

from ehr_service.storage.citus import CLAIM
from ehr_service.storage.tables import INDEX_TABLES, resource, resource_version

# Not in tables.metadata: the table exists only in the Citus layout.
resource_id_claim = Table(
    CLAIM,
    MetaData(),
    Column("res_type", String(64), primary_key=True),
    Column("res_id", String(64), primary_key=True),
    Column("compartment_patient_id", String(64), nullable=False),
)
_claim = resource_id_claim


def owner(conn: Connection, resource_type: str, resource_id: str) -> str | None:
    """The stored distribution value of the record holding this resource; None
    when no resource has this id."""
    found: str | None = conn.execute(
        select(_claim.c.compartment_patient_id).where(
            _claim.c.res_type == resource_type, _claim.c.res_id == resource_id
        )
    ).scalar()
    return found


def owners(conn: Connection, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """(type, id) -> stored distribution value, for the claimed ones among ``keys``."""
    found: dict[tuple[str, str], str] = {}
    grouped: dict[str, list[str]] = {}
    for resource_type, resource_id in keys:
        grouped.setdefault(resource_type, []).append(resource_id)
    if not grouped:
        return found
    rows = conn.execute(
        select(_claim).where(
            or_(
                *(
                    and_(_claim.c.res_type == t, _claim.c.res_id.in_(ids))
                    for t, ids in grouped.items()
                )
            )
        )
    ).all()
    for row in rows:
        found[(row.res_type, row.res_id)] = row.compartment_patient_id
    return found


def take(conn: Connection, claims: Sequence[tuple[str, str, str]]) -> None:
    """Claim (type, id, owner) rows; an id already claimed is a unique violation."""
    if claims:
        conn.execute(
            insert(_claim),
            [{"res_type": t, "res_id": i, "compartment_patient_id": o} for t, i, o in claims],
        )


def take_if_free(conn: Connection, resource_type: str, resource_id: str, owner_key: str) -> bool:
    """Claim one id unless it is taken (a concurrent update-as-create won the race)."""
    statement = (
        postgresql.insert(_claim)
        .values(res_type=resource_type, res_id=resource_id, compartment_patient_id=owner_key)
        .on_conflict_do_nothing()
        .returning(_claim.c.res_id)
    )
    return conn.execute(statement).first() is not None


def move(
    conn: Connection,
    resource_type: str,
    resource_id: str,
    old: str,
    new: str,
    expected_version_id: int,
) -> bool:
    """Move a resource, its history and nothing else from record ``old`` to
    ``new`` (the caller then writes the new version and its index rows); False
    when its current version is no longer ``expected_version_id``."""
    gone = conn.execute(
        delete(resource).where(
            resource.c.compartment_patient_id == old,
            resource.c.res_type == resource_type,
            resource.c.res_id == resource_id,
            resource.c.version_id == expected_version_id,
        )
    )
    if gone.rowcount != 1:
        return False
    rv = resource_version
    mine = and_(
        rv.c.compartment_patient_id == old,
        rv.c.res_type == resource_type,
        rv.c.res_id == resource_id,
    )
    names = [c.name for c in rv.columns if c.name != "compartment_patient_id"]
    history = conn.execute(select(*(rv.c[n] for n in names)).where(mine)).all()
    conn.execute(delete(rv).where(mine))
    if history:
        conn.execute(
            insert(rv),
            [
                dict(zip(names, row, strict=True)) | {"compartment_patient_id": new}
                for row in history
            ],
        )
    for table in INDEX_TABLES:
        conn.execute(
            delete(table).where(
                table.c.compartment_patient_id == old,
                table.c.res_type == resource_type,
                table.c.res_id == resource_id,
            )
        )
    conn.execute(
        update(_claim)
        .where(_claim.c.res_type == resource_type, _claim.c.res_id == resource_id)
        .values(compartment_patient_id=new)
    )
    return True


def write_current(
    conn: Connection,
    resource_type: str,
    resource_id: str,
    values: dict[str, Any],
    row: dict[str, Any],
    expected_version_id: int,
) -> tuple[bool, str | None]:
    """The next current row of a resource: ``values`` updated on its record's shard
    (the distribution column left as it is), or, when ``row`` names another
    record, the resource moved there and ``row`` inserted. Returns whether it was
    written (its current version was still ``expected_version_id``) and the record
    whose index rows are still to be replaced (None after a move: gone with it)."""
    old = owner(conn, resource_type, resource_id)
    if old is None:
        return False, None
    new = row["compartment_patient_id"]
    if old != new:
        if not move(conn, resource_type, resource_id, old, new, expected_version_id):
            return False, None
        conn.execute(insert(resource).values(**row))
        return True, None
    changed = {k: v for k, v in values.items() if k != "compartment_patient_id"}
    result = conn.execute(
        update(resource)
        .where(
            resource.c.compartment_patient_id == old,
            resource.c.res_type == resource_type,
            resource.c.res_id == resource_id,
            resource.c.version_id == expected_version_id,
        )
        .values(**changed)
    )
    return result.rowcount == 1, old
