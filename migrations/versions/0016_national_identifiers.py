"""National health-record numbers (WS 365): the numbers table, a sequence per division,
and a number for every existing record.

Each live Patient gets a new version whose identifiers keep the private record
number it had (``EHR_RECORD_NUMBER_SYSTEM``) with use ``old`` and add its national
number (``urn:oid:2.16.156.10011.1.2``, division from ``EHR_RECORD_DIVISION_CODE``
and the Patient's address), indexed for ``identifier`` search. Downgrading drops
the tables; the identifiers already written stay in the records.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-08
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

BATCH = 500


def upgrade() -> None:
    op.create_table(
        "health_record_number",
        sa.Column("number", sa.String(length=17), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("number", name="pk_health_record_number"),
        sa.UniqueConstraint("patient_id", name="uq_health_record_number_patient_id"),
    )
    op.create_table(
        "health_record_sequence",
        sa.Column("area", sa.String(length=12), nullable=False),
        sa.Column("last", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("area", name="pk_health_record_sequence"),
    )
    number_existing_records(op.get_bind())


def downgrade() -> None:
    op.drop_table("health_record_sequence")
    op.drop_table("health_record_number")


def number_existing_records(conn: sa.Connection) -> int:
    """A national number for every live Patient that has none; returns how many."""
    from ehr_service.config import Settings
    from ehr_service.fhir import jsonio
    from ehr_service.fhir.primitives import format_instant
    from ehr_service.storage.tables import resource

    settings = Settings()
    numbered = 0
    after = ""
    while True:
        rows = conn.execute(
            sa.select(resource.c.res_id, resource.c.version_id, resource.c.content)
            .where(
                resource.c.res_type == "Patient",
                resource.c.deleted == sa.false(),
                resource.c.res_id > after,
            )
            .order_by(resource.c.res_id)
            .limit(BATCH)
        ).all()
        now = datetime.now(UTC)
        for row in rows:
            patient = jsonio.loads(bytes(row.content))
            if _number(conn, settings, row.res_id, patient):
                _store(conn, row.res_id, row.version_id + 1, now, format_instant(now), patient)
                numbered += 1
        if len(rows) < BATCH:
            return numbered
        after = rows[-1].res_id


def _number(conn: sa.Connection, settings: Any, patient_id: str, patient: dict[str, Any]) -> bool:
    from ehr_service.mpi.record_numbers import (
        HEALTH_RECORD_SYSTEM,
        HEALTH_RECORD_TYPE,
        area_of,
        format_health_record_number,
    )
    from ehr_service.storage.record_numbers import allocate_health_record_number

    identifiers = [i for i in patient.get("identifier") or () if isinstance(i, dict)]
    if any(i.get("system") == HEALTH_RECORD_SYSTEM for i in identifiers):
        return False
    for identifier in identifiers:
        if identifier.get("system") == settings.record_number_system:
            identifier["use"] = "old"
    area = area_of(patient, settings.record_division_code)
    number = allocate_health_record_number(conn, patient_id, area, format_health_record_number)
    identifiers.append({"use": "official", "type": HEALTH_RECORD_TYPE,
                        "system": HEALTH_RECORD_SYSTEM, "value": number})  # fmt: skip
    patient["identifier"] = identifiers
    return True


def _store(
    conn: sa.Connection,
    patient_id: str,
    version_id: int,
    now: datetime,
    instant: str,
    patient: dict[str, Any],
) -> None:
    """The numbered record as the Patient's next version, with its index rows."""
    from ehr_service.fhir import jsonio
    from ehr_service.fhir.search.values import tokens_of
    from ehr_service.mpi.record_numbers import HEALTH_RECORD_SYSTEM
    from ehr_service.storage.tables import resource, resource_version, search_token

    meta = dict(patient.get("meta") or {})
    meta["versionId"], meta["lastUpdated"] = str(version_id), instant
    patient["meta"] = meta
    content = jsonio.dumps(patient)
    conn.execute(
        resource_version.insert().values(
            res_type="Patient", res_id=patient_id, version_id=version_id, last_updated=now,
            method="PUT", deleted=False, compartment_patient_id=patient_id, content=content,
        )
    )  # fmt: skip
    conn.execute(
        resource.update()
        .where(resource.c.res_type == "Patient", resource.c.res_id == patient_id)
        .values(version_id=version_id, last_updated=now, content=content)
    )
    identifier = next(i for i in patient["identifier"] if i.get("system") == HEALTH_RECORD_SYSTEM)
    rows = [
        {"param": "identifier", "system": system, "code": code, "text_norm": text}
        for system, code, text in tokens_of(identifier)
    ]
    rows += [
        {"param": "identifier:of-type", "system": f"{system}|{code}",
         "code": identifier["value"], "text_norm": None}
        for system, code, _ in tokens_of(identifier["type"])
    ]  # fmt: skip
    for row in rows:
        conn.execute(
            search_token.insert().values(
                res_type="Patient", res_id=patient_id, compartment_patient_id=patient_id, **row
            )
        )
