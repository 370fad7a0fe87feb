"""Recognition catalogue: the national medical-service price item codes of each item
(one national code can cover several items).

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "recognition_service_item",
        sa.Column("edition", sa.String(length=32), nullable=False),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("item", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("edition", "code", "item", name="pk_recognition_service_item"),
    )


def downgrade() -> None:
    op.drop_table("recognition_service_item")
