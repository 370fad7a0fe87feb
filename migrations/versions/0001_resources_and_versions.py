"""Resources and their append-only versions (docs/architecture.md §4).

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SEQUENCE = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "resource",
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("res_id", sa.String(length=64), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("last_updated", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("compartment_patient_id", sa.String(length=64), nullable=True),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("res_type", "res_id", name="pk_resource"),
    )
    op.create_index("ix_resource_compartment", "resource", ["compartment_patient_id", "res_type"])
    op.create_index("ix_resource_type_updated", "resource", ["res_type", "last_updated"])

    op.create_table(
        "resource_version",
        sa.Column("seq", SEQUENCE, autoincrement=True, nullable=False),
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("res_id", sa.String(length=64), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("last_updated", sa.DateTime(timezone=True), nullable=False),
        sa.Column("method", sa.String(length=8), nullable=False),
        sa.Column("deleted", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("compartment_patient_id", sa.String(length=64), nullable=True),
        sa.Column("content", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("seq", name="pk_resource_version"),
        sa.UniqueConstraint(
            "res_type", "res_id", "version_id", name="uq_resource_version_identity"
        ),
    )
    op.create_index("ix_resource_version_type_seq", "resource_version", ["res_type", "seq"])
    op.create_index("ix_resource_version_last_updated", "resource_version", ["last_updated"])
    op.create_index(
        "ix_resource_version_compartment", "resource_version", ["compartment_patient_id"]
    )


def downgrade() -> None:
    op.drop_table("resource_version")
    op.drop_table("resource")
