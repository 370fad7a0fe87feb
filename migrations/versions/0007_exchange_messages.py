"""Signed exchange messages (kept for re-verification) and the outbox.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

SEQUENCE = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("exchange_partner") as batch:
        batch.add_column(
            sa.Column("feed_cursor", SEQUENCE, nullable=False, server_default="0")
        )
    op.create_table(
        "exchange_message",
        sa.Column("issuer", sa.String(length=255), nullable=False),
        sa.Column("jti", sa.String(length=255), nullable=False),
        sa.Column("direction", sa.String(length=8), nullable=False),
        sa.Column("partner_id", sa.String(length=64), nullable=False),
        sa.Column("kid", sa.String(length=255), nullable=False),
        sa.Column("alg", sa.String(length=16), nullable=False),
        sa.Column("issued", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded", sa.DateTime(timezone=True), nullable=False),
        sa.Column("body_sha256", sa.String(length=64), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("signature", sa.String(length=8192), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("response", sa.LargeBinary(), nullable=True),
        sa.Column("response_signature", sa.String(length=8192), nullable=True),
        sa.PrimaryKeyConstraint("issuer", "jti", name="pk_exchange_message"),
    )
    op.create_index(
        "ix_exchange_message_partner_recorded", "exchange_message", ["partner_id", "recorded"]
    )
    op.create_table(
        "exchange_outbox",
        sa.Column("seq", SEQUENCE, autoincrement=True, nullable=False),
        sa.Column("partner_id", sa.String(length=64), nullable=False),
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("res_id", sa.String(length=64), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(length=8), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.String(length=1024), nullable=True),
        sa.Column("message_jti", sa.String(length=255), nullable=True),
        sa.Column("txid", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("seq", name="pk_exchange_outbox"),
        sa.UniqueConstraint(
            "partner_id",
            "res_type",
            "res_id",
            "version_id",
            name="uq_exchange_outbox_partner_id_res_type_res_id_version_id",
        ),
    )
    op.create_index(
        "ix_exchange_outbox_due", "exchange_outbox", ["partner_id", "state", "next_attempt"]
    )
    op.create_index("ix_exchange_outbox_feed", "exchange_outbox", ["partner_id", "seq"])


def downgrade() -> None:
    op.drop_table("exchange_outbox")
    op.drop_table("exchange_message")
    with op.batch_alter_table("exchange_partner") as batch:
        batch.drop_column("feed_cursor")
