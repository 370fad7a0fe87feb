"""Exchange feed in commit order: the outbox indexed by (partner, writing transaction,
position), the order the feed now pages in on PostgreSQL.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_exchange_outbox_feed_settled", "exchange_outbox", ["partner_id", "txid", "seq"]
    )


def downgrade() -> None:
    op.drop_index("ix_exchange_outbox_feed_settled", table_name="exchange_outbox")
