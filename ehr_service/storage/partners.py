"""The SQL of the exchange partner registry."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from ehr_service.storage.tables import exchange_partner


def get(conn: Connection, partner_id: str) -> dict[str, Any] | None:
    row = conn.execute(
        select(exchange_partner).where(exchange_partner.c.partner_id == partner_id)
    ).first()
    return None if row is None else dict(row._mapping)


def all_partners(conn: Connection) -> list[dict[str, Any]]:
    rows = conn.execute(select(exchange_partner).order_by(exchange_partner.c.partner_id)).all()
    return [dict(r._mapping) for r in rows]


def add(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(insert(exchange_partner).values(**values))


def change(conn: Connection, partner_id: str, values: dict[str, Any]) -> None:
    conn.execute(
        update(exchange_partner).where(exchange_partner.c.partner_id == partner_id).values(**values)
    )


def feed_cursor(conn: Connection, partner_id: str) -> int:
    """How far this region has read the partner's feed."""
    value = conn.execute(
        select(exchange_partner.c.feed_cursor).where(exchange_partner.c.partner_id == partner_id)
    ).scalar_one_or_none()
    return int(value or 0)


def set_feed_cursor(conn: Connection, partner_id: str, cursor: int) -> None:
    change(conn, partner_id, {"feed_cursor": cursor})


def remove(conn: Connection, partner_id: str) -> bool:
    result = conn.execute(
        delete(exchange_partner).where(exchange_partner.c.partner_id == partner_id)
    )
    return bool(result.rowcount)
