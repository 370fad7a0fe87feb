"""The SQL of the audit chain: append (no lock), seal into blocks, walk, and the
per-patient access log."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives import hashes
from sqlalchemy import (
    ColumnElement,
    Connection,
    and_,
    bindparam,
    false,
    func,
    insert,
    or_,
    select,
    text,
    true,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from ehr_service.storage.tables import audit_access, audit_block, audit_event, audit_head

GENESIS = "0" * 64


CHAIN_HASHES = ("sha256", "sm3")  # a block's statement names its own (sha256 if not)


def chain_hash(prev_hash: str, position: int, content: bytes, algorithm: str = "sha256") -> str:
    """The hash of the event at ``position``: over the previous hash, the position
    and the content (which names the event's id); SHA-256, or SM3 (GB/T 32905)."""
    head = f"{prev_hash}|{position}|".encode()
    if algorithm == "sm3":
        sm3 = hashes.Hash(hashes.SM3())
        sm3.update(head)
        sm3.update(content)
        return sm3.finalize().hex()
    if algorithm != "sha256":
        raise ValueError(f"unknown chain hash {algorithm!r}")
    digest = hashlib.sha256()
    digest.update(head)
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
    prev_hash: str | None  # None until sealed
    hash: str | None
    entity: str | None = None
    position: int | None = None
    block: int | None = None


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
        None if row.position is None else int(row.position),
        None if row.block is None else int(row.block),
    )


def append(conn: Connection, events: Sequence[NewEvent]) -> None:
    """Insert events in this transaction (they commit with it). Nothing is locked:
    ids come from a sequence, and the sealer chains the events once committed."""
    if not events:
        return
    ids = _allocate(conn, len(events))
    rows: list[dict[str, object]] = []
    accesses: list[dict[str, object]] = []
    for seq, event in zip(ids, events, strict=True):
        rows.append(
            {
                "seq": seq,
                "recorded": event.recorded,
                "kind": event.kind,
                "outcome": event.outcome,
                "subject": event.subject,
                "organization": event.organization,
                "entity": event.entity,
                "content": event.content_for(seq),
            }
        )
        accesses.extend({"patient_id": p, "seq": seq} for p in sorted(event.patients))
    conn.execute(_INSERT, rows)
    if accesses:
        conn.execute(_INSERT_ACCESS, accesses)


# Built once: every request runs them (no statement rebuilt, no cache key recomputed).
_INSERT = insert(audit_event)
_INSERT_ACCESS = insert(audit_access)
_NEXT_IDS = text("SELECT nextval('audit_event_id') FROM generate_series(1, :n)")


def _allocate(conn: Connection, count: int) -> list[int]:
    """``count`` new event ids, increasing: a sequence on PostgreSQL; on SQLite
    (one writer at a time) the counter in the head row."""
    if conn.dialect.name == "postgresql":
        rows = conn.execute(_NEXT_IDS, {"n": count})
        return sorted(int(r[0]) for r in rows)
    last = conn.execute(
        update(audit_head)
        .where(audit_head.c.id == 1)
        .values(allocated=audit_head.c.allocated + count)
        .returning(audit_head.c.allocated)
    ).scalar_one_or_none()
    if last is None:  # migration 0010 makes the row; a head lost since is made once
        _make_head(conn)
        return _allocate(conn, count)
    return list(range(int(last) - count + 1, int(last) + 1))


def _make_head(conn: Connection) -> None:
    """The head row at the genesis hash, unless a concurrent appender made it first."""
    dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    conn.execute(
        dialect_insert(audit_head).values(id=1, seq=0, hash=GENESIS).on_conflict_do_nothing()
    )


# -- sealing --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SealHead:
    position: int
    hash: str
    block: int
    legacy: int = 0  # events chained before blocks existed end here (migration 0012)


def lock_head(conn: Connection) -> SealHead | None:
    """The sealed chain's head, locked for this sealer; None while another seals
    (PostgreSQL: SKIP LOCKED; SQLite's write transaction already excludes it)."""
    query = select(*_HEAD_COLUMNS).where(audit_head.c.id == 1)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    row = conn.execute(query).first()
    if row is None:
        if conn.execute(select(audit_head.c.id)).first() is not None:
            return None  # it exists: another sealer holds it
        _make_head(conn)
        return lock_head(conn)
    return _head(row)


_HEAD_COLUMNS = (audit_head.c.seq, audit_head.c.hash, audit_head.c.block, audit_head.c.legacy)


def _head(row: Any) -> SealHead:
    return SealHead(int(row.seq), str(row.hash), int(row.block), int(row.legacy))


def unsealed(conn: Connection, limit: int) -> list[tuple[int, bytes]]:
    """(id, content) of committed events not chained yet, by id. The sealer alone
    gives positions, under the head lock: an event committed late is simply
    chained in a later round, never skipped, never twice."""
    query = select(audit_event.c.seq, audit_event.c.content).where(audit_event.c.position.is_(None))
    rows = conn.execute(query.order_by(audit_event.c.seq).limit(limit)).all()
    return [(int(r.seq), bytes(r.content)) for r in rows]


def chained_unblocked(conn: Connection, after: int, limit: int) -> list[StoredEvent]:
    """Events chained before blocks existed (migration 0012), from position
    ``after`` + 1 on, in chain order: the sealer signs blocks over them too."""
    rows = conn.execute(
        select(audit_event)
        .where(audit_event.c.position > after, audit_event.c.block.is_(None))
        .order_by(audit_event.c.position)
        .limit(limit)
    ).all()
    return [_stored(r) for r in rows]


def last_block(conn: Connection) -> dict[str, Any] | None:
    row = conn.execute(select(audit_block).order_by(audit_block.c.number.desc()).limit(1)).first()
    return None if row is None else dict(row._mapping)


def oldest_unsealed(conn: Connection) -> datetime | None:
    """When the oldest event not sealed yet was recorded (the sealer's lag)."""
    value = conn.execute(
        select(func.min(audit_event.c.recorded)).where(audit_event.c.position.is_(None))
    ).scalar()
    return value if isinstance(value, datetime) else None


def sealing_due(conn: Connection) -> bool:
    """Is anything committed and not sealed, or chained and in no block yet?"""
    unsealed_one = conn.execute(
        select(audit_event.c.seq).where(audit_event.c.position.is_(None)).limit(1)
    ).first()
    if unsealed_one is not None:
        return True
    last = last_block(conn)
    return head(conn).position > (last["last_position"] if last else 0)


def count_unsealed(conn: Connection) -> int:
    return int(
        conn.execute(
            select(func.count()).select_from(audit_event).where(audit_event.c.position.is_(None))
        ).scalar_one()
    )


@dataclass(frozen=True, slots=True)
class Link:
    seq: int
    position: int
    prev_hash: str
    hash: str
    new: bool = True  # False: chained before blocks existed, only closed into a block


def chain_block(conn: Connection, links: Sequence[Link], block: dict[str, Any]) -> None:
    """Write a sealed block: its events' places on the chain, the block, the head."""
    number = int(block["number"])
    if not links[0].new:  # events chained already (before blocks existed): the block only
        conn.execute(
            update(audit_event)
            .where(audit_event.c.position.between(links[0].position, links[-1].position))
            .values(block=number)
        )
        conn.execute(insert(audit_block).values(**block))
        conn.execute(update(audit_head).where(audit_head.c.id == 1).values(block=number))
        return
    conn.execute(
        update(audit_event)
        .where(audit_event.c.seq == bindparam("b_seq"))
        .values(
            position=bindparam("b_position"),
            prev_hash=bindparam("b_prev"),
            hash=bindparam("b_hash"),
            block=number,
        ),
        [
            {"b_seq": link.seq, "b_position": link.position, "b_prev": link.prev_hash,
             "b_hash": link.hash}
            for link in links
        ],
    )  # fmt: skip
    conn.execute(insert(audit_block).values(**block))
    last = links[-1]
    conn.execute(
        update(audit_head)
        .where(audit_head.c.id == 1)
        .values(seq=last.position, hash=last.hash, block=number)
    )


def head(conn: Connection) -> SealHead:
    row = conn.execute(select(*_HEAD_COLUMNS)).first()
    return SealHead(0, GENESIS, 0) if row is None else _head(row)


def walk(
    conn: Connection, batch: int = 1000, *, after: int = 0, through: int | None = None
) -> Iterator[StoredEvent]:
    """Every sealed event in chain order (positions after ``after``, up to ``through``)."""
    while True:
        query = select(audit_event).where(audit_event.c.position > after)
        if through is not None:
            query = query.where(audit_event.c.position <= through)
        rows = conn.execute(query.order_by(audit_event.c.position).limit(batch)).all()
        for row in rows:
            yield _stored(row)
        if len(rows) < batch:
            return
        after = int(rows[-1].position)


def blocks(conn: Connection) -> Iterator[dict[str, Any]]:
    """Every sealed block, in order."""
    after = 0
    while True:
        rows = conn.execute(
            select(audit_block).where(audit_block.c.number > after).order_by(audit_block.c.number)
            .limit(500)
        ).all()  # fmt: skip
        yield from (dict(r._mapping) for r in rows)
        if len(rows) < 500:
            return
        after = int(rows[-1].number)


def block_of(conn: Connection, seq: int) -> tuple[dict[str, Any], list[StoredEvent]] | None:
    """The block an event was sealed in, and that block's events in chain order."""
    number = conn.execute(select(audit_event.c.block).where(audit_event.c.seq == seq)).scalar()
    if number is None:
        return None
    block = conn.execute(select(audit_block).where(audit_block.c.number == number)).first()
    if block is None:
        return None
    rows = conn.execute(
        select(audit_event)
        .where(audit_event.c.position.between(block.first_position, block.last_position))
        .order_by(audit_event.c.position)
    ).all()
    return dict(block._mapping), [_stored(r) for r in rows]


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
