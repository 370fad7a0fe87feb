"""Blind indexes of the national suite: each resident ID number claim names its scheme.

A Patient's number is claimed under one row per blind-index scheme (HMAC-SHA-256,
HMAC-SM3), so a number indexed under either scheme cannot get a second record
while a deployment moves between suites (docs/architecture.md §6). Rows written
before this revision are HMAC-SHA-256 ones. The unique key on ``scheme`` first
also answers "is any claim of this scheme left?" from the index alone.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("resident_id_number") as batch:
        batch.add_column(
            sa.Column(
                "scheme", sa.String(length=16), nullable=False, server_default="hmac-sha256"
            )
        )
        batch.drop_constraint("uq_resident_id_number_patient_id", type_="unique")
        batch.create_unique_constraint(
            "uq_resident_id_number_scheme_patient", ["scheme", "patient_id"]
        )


def downgrade() -> None:
    # Only the HMAC-SHA-256 claims fit the one-row-per-Patient table of before: run
    # ``ehr-service keys rotate-data-key`` under the international suite first, so
    # every Patient has one.
    op.execute("DELETE FROM resident_id_number WHERE scheme <> 'hmac-sha256'")
    with op.batch_alter_table("resident_id_number") as batch:
        batch.drop_constraint("uq_resident_id_number_scheme_patient", type_="unique")
        batch.create_unique_constraint("uq_resident_id_number_patient_id", ["patient_id"])
        batch.drop_column("scheme")
