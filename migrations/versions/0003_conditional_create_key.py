"""Unique key of conditional creates (If-None-Exist), so concurrent ones make one resource.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "conditional_create_key",
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("criteria", sa.String(length=255), nullable=False),
        sa.Column("res_id", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("res_type", "criteria", name="pk_conditional_create_key"),
    )


def downgrade() -> None:
    op.drop_table("conditional_create_key")
