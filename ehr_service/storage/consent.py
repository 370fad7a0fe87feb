"""The SQL of consent refusals: kept in step with Consent resources, and checked."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, delete, insert, select

from ehr_service.storage.tables import consent_refusal


def replace_refusals(
    conn: Connection, consent_id: str, patient_id: str | None, actors: Sequence[str]
) -> None:
    conn.execute(delete(consent_refusal).where(consent_refusal.c.consent_id == consent_id))
    if patient_id and actors:
        conn.execute(
            insert(consent_refusal),
            [{"consent_id": consent_id, "actor": a, "patient_id": patient_id} for a in actors],
        )


def refused(conn: Connection, patient_id: str, actors: Sequence[str]) -> bool:
    """Has the resident refused any of these actors?"""
    row = conn.execute(
        select(consent_refusal.c.consent_id)
        .where(consent_refusal.c.patient_id == patient_id, consent_refusal.c.actor.in_(actors))
        .limit(1)
    ).first()
    return row is not None


def refused_patients(
    conn: Connection, patient_ids: Sequence[str], actors: Sequence[str]
) -> set[str]:
    """Which of these residents refused any of these actors."""
    if not patient_ids or not actors:
        return set()
    rows = conn.execute(
        select(consent_refusal.c.patient_id).where(
            consent_refusal.c.patient_id.in_(list(patient_ids)),
            consent_refusal.c.actor.in_(actors),
        )
    ).all()
    return {r.patient_id for r in rows}


def permitted(conn: Connection, patient_id: str, permits: Sequence[str]) -> bool:
    """Has the resident an active permit naming any of these (``permit:...``) actors?"""
    if not permits:
        return True
    return refused(conn, patient_id, permits)  # the same rows, read as permits


def permitted_patients(
    conn: Connection, patient_ids: Sequence[str], permits: Sequence[str]
) -> set[str]:
    """Which of these residents hold a permit naming any of these actors."""
    return refused_patients(conn, patient_ids, permits)
