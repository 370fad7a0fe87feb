"""The unique key that serialises concurrent conditional creates."""

from __future__ import annotations

from sqlalchemy import Connection, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from ehr_service.storage.tables import conditional_create_key


def claim(conn: Connection, resource_type: str, criteria: str, resource_id: str) -> bool:
    """Record that ``criteria`` created ``resource_id``; False if another transaction
    holds the key (PostgreSQL waits for that transaction to end first)."""
    dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    row = conn.execute(
        dialect_insert(conditional_create_key)
        .values(res_type=resource_type, criteria=criteria, res_id=resource_id)
        .on_conflict_do_nothing()
        .returning(conditional_create_key.c.res_id)
    ).first()
    return row is not None


def holder(conn: Connection, resource_type: str, criteria: str) -> str | None:
    key = conditional_create_key
    return conn.execute(
        select(key.c.res_id).where(key.c.res_type == resource_type, key.c.criteria == criteria)
    ).scalar_one_or_none()


def release(conn: Connection, resource_type: str, criteria: str) -> None:
    """Drop a stale key (its resource no longer matches the criteria)."""
    key = conditional_create_key
    conn.execute(delete(key).where(key.c.res_type == resource_type, key.c.criteria == criteria))
