"""The SQL of national health-record numbers (WS 365): a sequence per 12-digit
division and one number per Patient, unique by the table's primary key."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Connection, select
from sqlalchemy.dialects import postgresql, sqlite

from ehr_service.fhir.errors import Category, FhirError
from ehr_service.storage.tables import health_record_number, health_record_sequence

# Numbers handed out but lost to a clash with one stored without the sequence (e.g. by
# hand): the next ones are tried, a few times.
_ATTEMPTS = 8


def _insert(conn: Connection) -> type[postgresql.Insert] | type[sqlite.Insert]:
    return postgresql.Insert if conn.dialect.name == "postgresql" else sqlite.Insert


def health_record_number_of(conn: Connection, patient_id: str) -> str | None:
    return conn.execute(
        select(health_record_number.c.number).where(health_record_number.c.patient_id == patient_id)
    ).scalar_one_or_none()


def holder_of(conn: Connection, number: str) -> str | None:
    return conn.execute(
        select(health_record_number.c.patient_id).where(health_record_number.c.number == number)
    ).scalar_one_or_none()


def _next_sequence(conn: Connection, area: str) -> int:
    """The next sequence of ``area``: an upsert on its row, so two transactions never
    take the same one (on PostgreSQL the second waits for the first to end)."""
    table = health_record_sequence
    upsert = _insert(conn)(table).values(area=area, last=1)
    statement = upsert.on_conflict_do_update(
        index_elements=[table.c.area], set_={"last": table.c.last + 1}
    ).returning(table.c.last)
    return int(conn.execute(statement).scalar_one())


def allocate_health_record_number(
    conn: Connection, patient_id: str, area: str, formatted: Callable[[str, int], str]
) -> str:
    """The Patient's number, allocated in ``area`` on first use and never reused."""
    existing = health_record_number_of(conn, patient_id)
    if existing is not None:
        return existing
    for _ in range(_ATTEMPTS):
        sequence = _next_sequence(conn, area)
        try:
            number = formatted(area, sequence)
        except ValueError:
            raise FhirError.of(
                Category.UNPROCESSABLE,
                f"The health-record numbers of division {area} are used up (five-digit "
                "sequence): configure the township and village codes "
                "(EHR_RECORD_DIVISION_CODE) or give the address's division code",
                code="business-rule",
                expression=["Patient.address"],
            ) from None
        # A concurrent update-as-create of the same id may have taken one: then use its.
        inserted = conn.execute(
            _insert(conn)(health_record_number)
            .values(number=number, patient_id=patient_id)
            .on_conflict_do_nothing()
            .returning(health_record_number.c.number)
        ).scalar_one_or_none()
        if inserted is not None:
            return str(inserted)
        existing = health_record_number_of(conn, patient_id)
        if existing is not None:
            return existing
    raise FhirError.of(  # pragma: no cover - numbers stored beside the sequence
        Category.CONFLICT, "No free health-record number was found; retry", code="conflict"
    )
