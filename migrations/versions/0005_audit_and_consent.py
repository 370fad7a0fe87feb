"""Hash-chained audit events, and consent refusals derived from Consent resources.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

SEQUENCE = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "audit_event",
        sa.Column("seq", SEQUENCE, autoincrement=False, nullable=False),
        sa.Column("recorded", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("outcome", sa.String(length=4), nullable=False),
        sa.Column("subject", sa.String(length=255), nullable=False),
        sa.Column("organization", sa.String(length=255), nullable=True),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_audit_event"),
    )
    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", SEQUENCE, nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_head"),
    )
    op.create_table(
        "audit_access",
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("seq", SEQUENCE, nullable=False),
        sa.PrimaryKeyConstraint("patient_id", "seq", name="pk_audit_access"),
    )
    op.create_table(
        "consent_refusal",
        sa.Column("consent_id", sa.String(length=64), nullable=False),
        sa.Column("actor", sa.String(length=255), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("consent_id", "actor", name="pk_consent_refusal"),
    )
    op.create_index(
        "ix_consent_refusal_patient", "consent_refusal", ["patient_id", "actor"]
    )


def downgrade() -> None:
    op.drop_index("ix_consent_refusal_patient", table_name="consent_refusal")
    op.drop_table("consent_refusal")
    op.drop_table("audit_access")
    op.drop_table("audit_head")
    op.drop_table("audit_event")
