"""CDS Hooks cards: what each card issued at ordering offered, and the feedback on it.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cds_card",
        sa.Column("card_id", sa.String(length=36), nullable=False),
        sa.Column("service", sa.String(length=64), nullable=False),
        sa.Column("hook_instance", sa.String(length=64), nullable=False),
        sa.Column("client", sa.String(length=255), nullable=False),
        sa.Column("issued", sa.DateTime(timezone=True), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("item", sa.String(length=64), nullable=False),
        sa.Column("result_ref", sa.String(length=255), nullable=False),
        sa.Column("order_ref", sa.String(length=255), nullable=True),
        sa.Column("institution", sa.String(length=255), nullable=True),
        sa.Column("region", sa.String(length=64), nullable=True),
        sa.Column("suggestions", sa.String(length=4096), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("decision", sa.String(length=128), nullable=True),
        sa.Column("answered", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("card_id", name="pk_cds_card"),
    )
    op.create_index("ix_cds_card_issued", "cds_card", ["issued"])


def downgrade() -> None:
    op.drop_index("ix_cds_card_issued", table_name="cds_card")
    op.drop_table("cds_card")
