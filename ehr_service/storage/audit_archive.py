"""The SQL of audit retention: which signed blocks are old enough to archive,
the segment records, and the removal of archived events (in the transaction that
records their segment: the guard of ``storage/audit_guard.py`` allows nothing else)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select

from ehr_service.storage.tables import audit_access, audit_block, audit_event, audit_segment


def last_segment(conn: Connection) -> dict[str, Any] | None:
    row = conn.execute(
        select(audit_segment).order_by(audit_segment.c.number.desc()).limit(1)
    ).first()
    return None if row is None else dict(row._mapping)


def segments(conn: Connection) -> Iterator[dict[str, Any]]:
    """Every archived segment, in order."""
    after = 0
    while True:
        rows = conn.execute(
            select(audit_segment)
            .where(audit_segment.c.number > after)
            .order_by(audit_segment.c.number)
            .limit(200)
        ).all()
        yield from (dict(r._mapping) for r in rows)
        if len(rows) < 200:
            return
        after = int(rows[-1].number)


def archivable_blocks(
    conn: Connection, after_block: int, sealed_before: datetime, max_events: int
) -> list[dict[str, Any]]:
    """The signed blocks after ``after_block``, in order, sealed before the cut-off,
    as many as fit in ``max_events`` (at least one): the next segment. Blocks go
    whole and in order, so a segment never splits one and never leaves a gap."""
    rows = conn.execute(
        select(audit_block)
        .where(audit_block.c.number > after_block)
        .order_by(audit_block.c.number)
        .limit(10_000)
    ).all()
    chosen: list[dict[str, Any]] = []
    events = 0
    for row in rows:
        size = int(row.last_position) - int(row.first_position) + 1
        if row.sealed >= sealed_before or (chosen and events + size > max_events):
            break
        if int(row.number) != after_block + len(chosen) + 1:
            break  # a gap in the blocks: ``audit verify`` names it; nothing is archived past it
        chosen.append(dict(row._mapping))
        events += size
    return chosen


def seq_bounds(conn: Connection, first_position: int, last_position: int) -> tuple[int, int, int]:
    """(lowest id, highest id, count) of the events at these positions."""
    row = conn.execute(
        select(func.min(audit_event.c.seq), func.max(audit_event.c.seq), func.count()).where(
            audit_event.c.position.between(first_position, last_position)
        )
    ).one()
    return int(row[0] or 0), int(row[1] or 0), int(row[2])


def record_segment(conn: Connection, segment: dict[str, Any]) -> int:
    """Record the segment and remove the events it holds (and their access rows)
    from the online tables; how many events were removed. A second archiver of
    the same blocks fails on the segment's unique first block."""
    conn.execute(insert(audit_segment).values(**segment))
    first, last = int(segment["first_position"]), int(segment["last_position"])
    held = select(audit_event.c.seq).where(audit_event.c.position.between(first, last))
    conn.execute(delete(audit_access).where(audit_access.c.seq.in_(held)))
    removed = conn.execute(delete(audit_event).where(audit_event.c.position.between(first, last)))
    return int(removed.rowcount or 0)


def segments_holding(conn: Connection, seq: int) -> list[dict[str, Any]]:
    """The segments whose id range covers event ``seq`` (ranges of neighbours may
    overlap: an event committed late is chained, and archived, after later ids)."""
    rows = conn.execute(
        select(audit_segment)
        .where(audit_segment.c.first_seq <= seq, audit_segment.c.last_seq >= seq)
        .order_by(audit_segment.c.number)
    ).all()
    return [dict(r._mapping) for r in rows]


def archived_through(conn: Connection) -> int:
    """The last chain position archived (0: none)."""
    value = conn.execute(select(func.max(audit_segment.c.last_position))).scalar()
    return int(value or 0)
