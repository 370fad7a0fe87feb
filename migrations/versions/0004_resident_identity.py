"""Resident identity: unique ID numbers by blind token, lifelong record numbers.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

SEQUENCE = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "resident_id_number",
        sa.Column("blind_index", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("blind_index", name="pk_resident_id_number"),
        sa.UniqueConstraint("patient_id", name="uq_resident_id_number_patient_id"),
    )
    op.create_table(
        "record_number",
        sa.Column("number", SEQUENCE, autoincrement=True, nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("number", name="pk_record_number"),
        sa.UniqueConstraint("patient_id", name="uq_record_number_patient_id"),
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    op.drop_table("record_number")
    op.drop_table("resident_id_number")
