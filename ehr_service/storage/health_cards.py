"""The SQL of e-health cards: a card's blind index binds it to one resident (the
primary key is the uniqueness), the card ID kept sealed beside it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, insert, select
from sqlalchemy.exc import IntegrityError

from ehr_service.storage.tables import health_card
from ehr_service.storage.unit_of_work import savepoint


def bind(conn: Connection, blind: str, patient_id: str, sealed: str, now: datetime) -> str:
    """Bind the card to ``patient_id``; the resident it is bound to (another one if it
    was bound before, by this or a concurrent transaction: the primary key decides)."""
    try:
        with savepoint(conn):
            conn.execute(
                insert(health_card).values(
                    card_blind=blind, patient_id=patient_id, card_sealed=sealed, bound_at=now
                )
            )
        return patient_id
    except IntegrityError:
        holder = holder_of(conn, blind)
        assert holder is not None  # the row that refused the insert
        return holder


def holder_of(conn: Connection, blind: str) -> str | None:
    """The resident a card (by its blind index) is bound to."""
    row = conn.execute(
        select(health_card.c.patient_id).where(health_card.c.card_blind == blind)
    ).first()
    return None if row is None else str(row.patient_id)
