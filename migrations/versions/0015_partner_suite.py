"""The cryptographic suite each exchange partner signs with and accepts
(docs/architecture.md §8): international (ES256, Ed25519), national (SM2 with SM3)
or both. Partners registered before keep the international suite.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("exchange_partner") as batch:
        batch.add_column(
            sa.Column(
                "suite", sa.String(length=16), nullable=False, server_default="international"
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("exchange_partner") as batch:
        batch.drop_column("suite")
