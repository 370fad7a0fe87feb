"""The SQL of signed exchanges: stored messages and the outbox."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, func, literal, literal_column, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite

from ehr_service.storage.tables import exchange_message, exchange_outbox, resource


def _insert(conn: Connection) -> Any:
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


# -- messages -----------------------------------------------------------------------
def claim_message(conn: Connection, values: dict[str, Any]) -> bool:
    """Insert a message row; False when (issuer, jti) is taken. On PostgreSQL a
    concurrent insert of the same key waits for the other transaction to end."""
    inserted = conn.execute(
        _insert(conn)(exchange_message)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["issuer", "jti"])
        .returning(exchange_message.c.jti)
    ).first()
    return inserted is not None


def set_response(
    conn: Connection, issuer: str, jti: str, status: int, response: bytes, signature: str | None
) -> None:
    conn.execute(
        update(exchange_message)
        .where(exchange_message.c.issuer == issuer, exchange_message.c.jti == jti)
        .values(status=status, response=response, response_signature=signature)
    )


def get_message(conn: Connection, issuer: str, jti: str) -> dict[str, Any] | None:
    row = conn.execute(
        select(exchange_message).where(
            exchange_message.c.issuer == issuer, exchange_message.c.jti == jti
        )
    ).first()
    return None if row is None else dict(row._mapping)


def messages(
    conn: Connection, *, after: tuple[str, str] | None = None, limit: int = 200
) -> list[dict[str, Any]]:
    """Stored messages in key order, a page at a time."""
    query = select(exchange_message).order_by(exchange_message.c.issuer, exchange_message.c.jti)
    if after is not None:
        issuer, jti = after
        query = query.where(
            (exchange_message.c.issuer > issuer)
            | and_(exchange_message.c.issuer == issuer, exchange_message.c.jti > jti)
        )
    return [dict(r._mapping) for r in conn.execute(query.limit(limit)).all()]


def replace_body(conn: Connection, issuer: str, jti: str, body: bytes) -> None:
    """The message's sealed bytes, sealed again (a data key rotation)."""
    conn.execute(
        update(exchange_message)
        .where(exchange_message.c.issuer == issuer, exchange_message.c.jti == jti)
        .values(body=body)
    )


# -- outbox -------------------------------------------------------------------------
_TXID = "pg_current_xact_id()::text::bigint"
_XMIN = "pg_snapshot_xmin(pg_current_snapshot())::text::bigint"


def enqueue(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    if not rows:
        return
    statement = _insert(conn)(exchange_outbox)
    if conn.dialect.name == "postgresql":
        statement = statement.values(txid=literal_column(_TXID))
    conn.execute(
        statement.on_conflict_do_nothing(
            index_elements=["partner_id", "res_type", "res_id", "version_id"]
        ),
        list(rows),
    )


def due(conn: Connection, partner_id: str, now: datetime, limit: int) -> list[dict[str, Any]]:
    """Pending rows of a partner whose next attempt is due, oldest first, locked
    against a second pusher on PostgreSQL (SKIP LOCKED)."""
    query = (
        select(exchange_outbox)
        .where(
            exchange_outbox.c.partner_id == partner_id,
            exchange_outbox.c.state == "pending",
            exchange_outbox.c.next_attempt <= now,
        )
        .order_by(exchange_outbox.c.seq)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return [dict(r._mapping) for r in conn.execute(query).all()]


def mark(conn: Connection, seqs: Sequence[int], **values: Any) -> None:
    if seqs:
        conn.execute(
            update(exchange_outbox).where(exchange_outbox.c.seq.in_(list(seqs))).values(**values)
        )


def feed_rows(
    conn: Connection, partner_id: str, *, after: int, since: datetime | None, before: datetime,
    limit: int,
) -> list[dict[str, Any]]:  # fmt: skip
    """What changed for a partner: outbox rows after the row ``after`` (a seq; 0: from
    the start), settled before ``before``.

    On PostgreSQL, in the order of the writing transactions' ids, then seq, and only
    rows of transactions older than every one still open (``txid`` below the
    snapshot's xmin). Every transaction that can still write a row has an id at
    least that xmin, so a cursor never passes a row that commits later. (Ordered by
    seq alone it could: a transaction with an older id that took its seq after a
    younger one's commits first.) SQLite has one writer at a time: seq order."""
    out = exchange_outbox
    conditions = [out.c.partner_id == partner_id, out.c.created < before]
    if since is not None:
        conditions.append(out.c.created >= since)
    if conn.dialect.name != "postgresql":
        query = select(out).where(*conditions, out.c.seq > after).order_by(out.c.seq)
        return [dict(r._mapping) for r in conn.execute(query.limit(limit)).all()]
    conditions.append(out.c.txid < literal_column(_XMIN))
    if after > 0:
        # the cursor's row (or, for a seq that is none of the partner's rows, the
        # last one before it) places it in the (txid, seq) order
        mark = conn.execute(
            select(out.c.txid)
            .where(out.c.partner_id == partner_id, out.c.seq <= after)
            .order_by(out.c.seq.desc())
            .limit(1)
        ).scalar()
        if mark is not None:
            conditions.append(tuple_(out.c.txid, out.c.seq) > tuple_(literal(mark), literal(after)))
    query = select(out).where(*conditions).order_by(out.c.txid, out.c.seq)
    return [dict(r._mapping) for r in conn.execute(query.limit(limit)).all()]


def status_counts(conn: Connection) -> list[tuple[str, str, int, datetime | None]]:
    """(partner, state, rows, oldest created) for every partner and state."""
    rows = conn.execute(
        select(
            exchange_outbox.c.partner_id,
            exchange_outbox.c.state,
            func.count(),
            func.min(exchange_outbox.c.created),
        )
        .group_by(exchange_outbox.c.partner_id, exchange_outbox.c.state)
        .order_by(exchange_outbox.c.partner_id, exchange_outbox.c.state)
    ).all()
    return [(r[0], r[1], int(r[2]), r[3]) for r in rows]


def dead_rows(conn: Connection, limit: int = 50) -> list[dict[str, Any]]:
    query = (
        select(exchange_outbox)
        .where(exchange_outbox.c.state == "dead")
        .order_by(exchange_outbox.c.seq)
        .limit(limit)
    )
    return [dict(r._mapping) for r in conn.execute(query).all()]


def revive_dead(conn: Connection, partner_id: str | None, now: datetime) -> int:
    """Put dead rows back in the queue (after the partner's problem is fixed)."""
    condition = exchange_outbox.c.state == "dead"
    if partner_id is not None:
        condition = and_(condition, exchange_outbox.c.partner_id == partner_id)
    result = conn.execute(
        update(exchange_outbox)
        .where(condition)
        .values(state="pending", attempts=0, next_attempt=now, last_error=None)
    )
    return int(result.rowcount)


def current_contents(
    conn: Connection, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], tuple[int, bytes | None]]:
    """(version, content or None if deleted) of the current version of each resource."""
    out: dict[tuple[str, str], tuple[int, bytes | None]] = {}
    by_type: dict[str, list[str]] = {}
    for resource_type, resource_id in keys:
        by_type.setdefault(resource_type, []).append(resource_id)
    for resource_type, ids in by_type.items():
        rows = conn.execute(
            select(
                resource.c.res_id, resource.c.version_id, resource.c.deleted, resource.c.content
            ).where(resource.c.res_type == resource_type, resource.c.res_id.in_(ids))
        ).all()
        for row in rows:
            content = None if row.deleted else bytes(row.content)
            out[(resource_type, row.res_id)] = (row.version_id, content)
    return out
