"""The SQL of CDS Hooks: the cards issued at ordering and the feedback on them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update

from ehr_service.storage.tables import cds_card, search_token


def add_cards(conn: Connection, cards: Sequence[dict[str, Any]]) -> None:
    if cards:
        conn.execute(insert(cds_card), list(cards))


def cards(conn: Connection, card_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The stored cards of these uuids, locked for the feedback that answers them."""
    if not card_ids:
        return {}
    query = select(cds_card).where(cds_card.c.card_id.in_(list(card_ids)))
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return {row.card_id: dict(row._mapping) for row in conn.execute(query).all()}


def answer(conn: Connection, card_id: str, outcome: str, decision: str, when: datetime) -> bool:
    """Record the feedback on a card not answered yet; False if it was answered."""
    done = conn.execute(
        update(cds_card)
        .where(cds_card.c.card_id == card_id, cds_card.c.outcome.is_(None))
        .values(outcome=outcome, decision=decision, answered=when)
    )
    return bool(done.rowcount)


def task_with_identifier(conn: Connection, system: str, value: str) -> str | None:
    """The id of a Task indexed with this identifier (one the CDS client created from a
    card's suggestion on this server), if any."""
    return conn.execute(
        select(search_token.c.res_id)
        .where(
            search_token.c.res_type == "Task",
            search_token.c.param == "identifier",
            search_token.c.system == system,
            search_token.c.code == value,
        )
        .limit(1)
    ).scalar_one_or_none()
