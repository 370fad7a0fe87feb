"""The SQL of mutual recognition: catalogue editions, a patient's results, facts."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from ehr_service.storage.tables import (
    recognition_code_map,
    recognition_edition,
    recognition_fact,
    recognition_item,
    recognition_service_item,
    resource,
    search_reference,
)


def replace_edition(
    conn: Connection,
    edition: dict[str, Any],
    items: Sequence[dict[str, Any]],
    codes: Sequence[dict[str, Any]],
    services: Sequence[dict[str, Any]] = (),
) -> None:
    """Store an edition and make it the active one (the others stay, inactive)."""
    name = edition["edition"]
    tables = (recognition_service_item, recognition_code_map, recognition_item)
    for table in (*tables, recognition_edition):
        conn.execute(delete(table).where(table.c.edition == name))
    conn.execute(update(recognition_edition).values(active=False))
    conn.execute(insert(recognition_edition).values(**edition, active=True))
    if items:
        conn.execute(insert(recognition_item), [{**i, "edition": name} for i in items])
    if codes:
        conn.execute(insert(recognition_code_map), [{**c, "edition": name} for c in codes])
    if services:
        conn.execute(insert(recognition_service_item), [{**c, "edition": name} for c in services])


def active_edition(conn: Connection) -> dict[str, Any] | None:
    row = conn.execute(
        select(recognition_edition).where(recognition_edition.c.active.is_(True))
    ).first()
    return None if row is None else dict(row._mapping)


def editions(conn: Connection) -> list[dict[str, Any]]:
    rows = conn.execute(select(recognition_edition).order_by(recognition_edition.c.loaded)).all()
    return [dict(r._mapping) for r in rows]


def edition_items(conn: Connection, edition: str) -> list[dict[str, Any]]:
    rows = conn.execute(select(recognition_item).where(recognition_item.c.edition == edition)).all()
    return [dict(r._mapping) for r in rows]


def edition_codes(conn: Connection, edition: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(recognition_code_map).where(recognition_code_map.c.edition == edition)
    ).all()
    return [dict(r._mapping) for r in rows]


def edition_service_items(conn: Connection, edition: str) -> list[tuple[str, str]]:
    """(national service item code, catalogue item) pairs of an edition."""
    table = recognition_service_item
    rows = conn.execute(
        select(table.c.code, table.c.item)
        .where(table.c.edition == edition)
        .order_by(table.c.code, table.c.item)
    ).all()
    return [(r.code, r.item) for r in rows]


def patient_results(
    conn: Connection, patient_id: str, types: Sequence[str]
) -> list[tuple[str, str, bytes]]:
    """(type, id, content) of the live resources of these types in a record."""
    rows = conn.execute(
        select(resource.c.res_type, resource.c.res_id, resource.c.content).where(
            resource.c.compartment_patient_id == patient_id,
            resource.c.res_type.in_(list(types)),
            resource.c.deleted.is_(False),
        )
    ).all()
    return [(r.res_type, r.res_id, bytes(r.content)) for r in rows]


def results_performed_by(
    conn: Connection, organization_id: str, types: Sequence[str]
) -> list[tuple[str, str]]:
    """(type, id) of the results whose performer is this Organization."""
    rows = conn.execute(
        select(search_reference.c.res_type, search_reference.c.res_id)
        .where(
            search_reference.c.target_type == "Organization",
            search_reference.c.target_id == organization_id,
            search_reference.c.res_type.in_(list(types)),
            search_reference.c.param == "performer",
        )
        .distinct()
    ).all()
    return [(r.res_type, r.res_id) for r in rows]


def result_ids(conn: Connection, resource_type: str, after: str | None, limit: int) -> list[str]:
    conditions = [resource.c.res_type == resource_type, resource.c.deleted.is_(False)]
    if after is not None:
        conditions.append(resource.c.res_id > after)
    rows = conn.execute(
        select(resource.c.res_id).where(*conditions).order_by(resource.c.res_id).limit(limit)
    ).all()
    return [r.res_id for r in rows]


def add_facts(conn: Connection, facts: Sequence[dict[str, Any]]) -> int:
    """Insert facts; one whose dedupe key is taken is skipped. Returns how many
    were inserted."""
    inserted = 0
    dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    for fact in facts:
        row = {
            **fact,
            "institution": (fact.get("institution") or None) and fact["institution"][:255],
            "region": (fact.get("region") or None) and fact["region"][:64],
        }
        added = conn.execute(
            dialect_insert(recognition_fact)
            .values(**row)
            .on_conflict_do_nothing(index_elements=["dedupe_key"])
            .returning(recognition_fact.c.seq)
        ).first()
        inserted += added is not None
    return inserted


GROUPS = {
    "item": recognition_fact.c.item,
    "institution": recognition_fact.c.institution,
    "region": recognition_fact.c.region,
}


def fact_counts(
    conn: Connection, start: datetime | None, end: datetime | None, group_by: str
) -> list[tuple[str | None, str, str | None, int, float]]:
    """(group, kind, reason, count, price sum) over facts recorded in [start, end)."""
    group = GROUPS[group_by]
    conditions = []
    if start is not None:
        conditions.append(recognition_fact.c.recorded >= start)
    if end is not None:
        conditions.append(recognition_fact.c.recorded < end)
    query = (
        select(
            group,
            recognition_fact.c.kind,
            recognition_fact.c.reason,
            func.count(),
            func.coalesce(func.sum(recognition_fact.c.price), 0.0),
        )
        .where(*conditions)
        .group_by(group, recognition_fact.c.kind, recognition_fact.c.reason)
        .order_by(group, recognition_fact.c.kind, recognition_fact.c.reason)
    )
    return [(r[0], r[1], r[2], int(r[3]), float(r[4])) for r in conn.execute(query).all()]
