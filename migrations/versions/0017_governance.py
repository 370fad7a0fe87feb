"""Governance (issue 23): the resident's e-health card (居民电子健康卡).

``health_card`` binds a card to one resident. The card ID (64 hexadecimal
characters) is never stored in plaintext: its keyed blind index (the HMAC of the
field keys, as for ID numbers) is the primary key, so one card binds at most one
resident by a database constraint, and the number itself is kept sealed (AEAD).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "health_card",
        sa.Column("card_blind", sa.String(64), primary_key=True),
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.Column("card_sealed", sa.Text(), nullable=False),
        sa.Column("bound_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_health_card_patient", "health_card", ["patient_id"])


def downgrade() -> None:
    op.drop_index("ix_health_card_patient", table_name="health_card")
    op.drop_table("health_card")
