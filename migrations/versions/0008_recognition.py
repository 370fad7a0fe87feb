"""Mutual recognition: catalogue editions, items, code maps and statistics facts.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

SEQUENCE = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "recognition_edition",
        sa.Column("edition", sa.String(length=32), nullable=False),
        sa.Column("url", sa.String(length=255), nullable=False),
        sa.Column("items", sa.Integer(), nullable=False),
        sa.Column("loaded", sa.DateTime(timezone=True), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("edition", name="pk_recognition_edition"),
    )
    op.create_table(
        "recognition_item",
        sa.Column("edition", sa.String(length=32), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("category", sa.String(length=16), nullable=False),
        sa.Column("name_zh", sa.String(length=255), nullable=False),
        sa.Column("name_en", sa.String(length=255), nullable=False),
        sa.Column("loinc", sa.String(length=32), nullable=True),
        sa.Column("modality", sa.String(length=16), nullable=True),
        sa.Column("body_site", sa.String(length=32), nullable=True),
        sa.Column("validity_days", sa.Integer(), nullable=False),
        sa.Column("qc_category", sa.String(length=64), nullable=False),
        sa.Column("price", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("edition", "code", name="pk_recognition_item"),
    )
    op.create_table(
        "recognition_code_map",
        sa.Column("edition", sa.String(length=32), nullable=False),
        sa.Column("system", sa.String(length=255), nullable=False),
        sa.Column("code", sa.String(length=128), nullable=False),
        sa.Column("item", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("edition", "system", "code", name="pk_recognition_code_map"),
    )
    op.create_table(
        "recognition_fact",
        sa.Column("seq", SEQUENCE, autoincrement=True, nullable=False),
        sa.Column("recorded", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("item", sa.String(length=64), nullable=False),
        sa.Column("institution", sa.String(length=255), nullable=True),
        sa.Column("region", sa.String(length=64), nullable=True),
        sa.Column("reason", sa.String(length=64), nullable=True),
        sa.Column("price", sa.Float(), nullable=False),
        sa.Column("dedupe_key", sa.String(length=512), nullable=True),
        sa.PrimaryKeyConstraint("seq", name="pk_recognition_fact"),
        sa.UniqueConstraint("dedupe_key", name="uq_recognition_fact_dedupe_key"),
    )
    op.create_index("ix_recognition_fact_recorded", "recognition_fact", ["recorded"])


def downgrade() -> None:
    op.drop_table("recognition_fact")
    op.drop_table("recognition_code_map")
    op.drop_table("recognition_item")
    op.drop_table("recognition_edition")
