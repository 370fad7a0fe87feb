"""The SQL of the audit chain: append under the head lock, walk, and the
per-patient access log."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, false, insert, or_, select, true, update
from sqlalchemy.dialects import postgresql, sqlite

from ehr_service.storage.tables import audit_access, audit_event, audit_head

GENESIS = "0" * 64


def chain_hash(prev_hash: str, seq: int, content: bytes) -> str:
    """The hash of event ``seq``: over the previous hash, its number and its content."""
    digest = hashlib.sha256()
    digest.update(f"{prev_hash}|{seq}|".encode())
    digest.update(content)
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class NewEvent:
    recorded: datetime
    kind: str
    outcome: str
    subject: str
    organization: str | None
    patients: frozenset[str]
    content_for: Callable[[int], bytes]  # the event's JSON, given its number
    entity: str | None = None  # Type/id acted on, as the JSON names it


@dataclass(frozen=True, slots=True)
class StoredEvent:
    seq: int
    recorded: datetime
    kind: str
    outcome: str
    subject: str
    organization: str | None
    content: bytes
    prev_hash: str
    hash: str
    entity: str | None = None


def _stored(row: Any) -> StoredEvent:
    return StoredEvent(
        int(row.seq),
        row.recorded,
        row.kind,
        row.outcome,
        row.subject,
        row.organization,
        bytes(row.content),
        row.prev_hash,
        row.hash,
        row.entity,
    )


def append(conn: Connection, events: Sequence[NewEvent]) -> None:
    """Append events to the chain in this transaction (they commit with it)."""
    if not events:
        return
    query = select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()  # appenders queue here: one chain, no forks
    head = conn.execute(query).first()
    if head is None:  # migration 0010 makes the row; a head lost since is made once
        _make_head(conn)
        head = conn.execute(query).first()
    assert head is not None
    seq, prev = int(head.seq), str(head.hash)
    rows: list[dict[str, object]] = []
    accesses: list[dict[str, object]] = []
    for event in events:
        seq += 1
        content = event.content_for(seq)
        digest = chain_hash(prev, seq, content)
        rows.append(
            {
                "seq": seq,
                "recorded": event.recorded,
                "kind": event.kind,
                "outcome": event.outcome,
                "subject": event.subject,
                "organization": event.organization,
                "entity": event.entity,
                "content": content,
                "prev_hash": prev,
                "hash": digest,
            }
        )
        accesses.extend({"patient_id": p, "seq": seq} for p in sorted(event.patients))
        prev = digest
    conn.execute(insert(audit_event), rows)
    if accesses:
        conn.execute(insert(audit_access), accesses)
    conn.execute(update(audit_head).where(audit_head.c.id == 1).values(seq=seq, hash=prev))


def _make_head(conn: Connection) -> None:
    """The head row at the genesis hash, unless a concurrent appender made it first."""
    dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    conn.execute(
        dialect_insert(audit_head).values(id=1, seq=0, hash=GENESIS).on_conflict_do_nothing()
    )


def head(conn: Connection) -> tuple[int, str]:
    row = conn.execute(select(audit_head.c.seq, audit_head.c.hash)).first()
    return (0, GENESIS) if row is None else (int(row.seq), str(row.hash))


def walk(conn: Connection, batch: int = 1000) -> Iterator[StoredEvent]:
    """Every event in sequence order."""
    after = 0
    while True:
        rows = conn.execute(
            select(audit_event)
            .where(audit_event.c.seq > after)
            .order_by(audit_event.c.seq)
            .limit(batch)
        ).all()
        for row in rows:
            yield _stored(row)
        if len(rows) < batch:
            return
        after = int(rows[-1].seq)


def accesses(conn: Connection, first: int, last: int) -> dict[int, set[str]]:
    """Patients recorded per event, for events ``first`` to ``last``."""
    rows = conn.execute(
        select(audit_access.c.seq, audit_access.c.patient_id).where(
            audit_access.c.seq >= first, audit_access.c.seq <= last
        )
    ).all()
    out: dict[int, set[str]] = {}
    for row in rows:
        out.setdefault(int(row.seq), set()).add(row.patient_id)
    return out


def access_log(
    conn: Connection, patient_id: str, *, before: int | None, limit: int
) -> list[StoredEvent]:
    """Events that touched the patient's record, newest first."""
    query = (
        select(audit_event)
        .join(audit_access, audit_access.c.seq == audit_event.c.seq)
        .where(audit_access.c.patient_id == patient_id)
    )
    if before is not None:
        query = query.where(audit_event.c.seq < before)
    rows = conn.execute(query.order_by(audit_event.c.seq.desc()).limit(limit)).all()
    return [_stored(r) for r in rows]


@dataclass(frozen=True, slots=True)
class KindFilter:
    """Event kinds in (or, with ``negate``, not in) ``kinds``."""

    kinds: tuple[str, ...]
    negate: bool = False


@dataclass(frozen=True, slots=True)
class EventQuery:
    """A parsed AuditEvent search: each tuple of alternatives is ORed, the
    tuples ANDed. Recorded bounds are (low inclusive, high exclusive) pairs."""

    ids: tuple[tuple[int, ...], ...] = ()
    patients: tuple[tuple[str, ...], ...] = ()
    subjects: tuple[tuple[str, ...], ...] = ()
    entities: tuple[tuple[str, ...], ...] = ()
    kinds: tuple[tuple[KindFilter, ...], ...] = ()
    outcomes: tuple[tuple[str, ...], ...] = ()
    recorded: tuple[tuple[tuple[datetime | None, datetime | None], ...], ...] = ()


def search_events(
    conn: Connection,
    query: EventQuery,
    *,
    before: int | None,
    after: int | None,
    limit: int,
) -> list[StoredEvent]:
    """Events matching ``query``, newest first (``after``: the page before, oldest
    first from there, returned newest first too)."""
    table = audit_event
    clauses: list[Any] = []
    clauses.extend(table.c.seq.in_(ids) for ids in query.ids)
    clauses.extend(
        table.c.seq.in_(select(audit_access.c.seq).where(audit_access.c.patient_id.in_(group)))
        for group in query.patients
    )
    clauses.extend(table.c.subject.in_(group) for group in query.subjects)
    clauses.extend(table.c.entity.in_(group) for group in query.entities)
    clauses.extend(table.c.outcome.in_(group) for group in query.outcomes)
    for filters in query.kinds:
        clauses.append(
            or_(*(table.c.kind.not_in(f.kinds) if f.negate else table.c.kind.in_(f.kinds)
                  for f in filters))
        )  # fmt: skip
    for alternatives in query.recorded:
        ranges = []
        for low, high in alternatives:
            bounds: list[ColumnElement[bool]] = [true()]
            if low is not None:
                bounds.append(table.c.recorded >= low)
            if high is not None:
                bounds.append(table.c.recorded < high)
            ranges.append(and_(*bounds))
        clauses.append(or_(*ranges) if ranges else false())
    statement = select(table).where(*clauses)
    if after is not None:
        rows = list(
            conn.execute(statement.where(table.c.seq > after).order_by(table.c.seq).limit(limit))
        )
        rows.reverse()
    else:
        if before is not None:
            statement = statement.where(table.c.seq < before)
        rows = list(conn.execute(statement.order_by(table.c.seq.desc()).limit(limit)))
    return [_stored(r) for r in rows]
