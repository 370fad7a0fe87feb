"""The audit chain without a global lock (docs/architecture.md §9, "The audit chain").

An event is inserted in its request's own transaction with an id from a
sequence (PostgreSQL; on SQLite, whose writers are serialised anyway, a counter
in ``audit_head``) and no hash. A sealer then chains committed events in order
(``position``, ``prev_hash``, ``hash``) into blocks whose Merkle root is signed
with the region's key (``audit_block``). Events chained before this revision
keep their hashes (their position is their id, up to ``audit_head.legacy``);
the sealer closes them into signed blocks before any new event.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

SEQUENCE = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    bind = op.get_bind()
    postgresql = bind.dialect.name == "postgresql"
    with op.batch_alter_table("audit_event") as batch:
        batch.add_column(sa.Column("position", SEQUENCE, nullable=True))
        batch.add_column(sa.Column("block", SEQUENCE, nullable=True))
        batch.alter_column("prev_hash", existing_type=sa.String(64), nullable=True)
        batch.alter_column("hash", existing_type=sa.String(64), nullable=True)
    op.execute("UPDATE audit_event SET position = seq")
    op.create_index("uq_audit_event_position", "audit_event", ["position"], unique=True)
    # What the sealer looks for: the events not chained yet.
    op.create_index(
        "ix_audit_event_unsealed",
        "audit_event",
        ["seq"],
        postgresql_where=sa.text("position IS NULL"),
        sqlite_where=sa.text("position IS NULL"),
    )
    with op.batch_alter_table("audit_head") as batch:
        batch.add_column(sa.Column("allocated", SEQUENCE, nullable=False, server_default="0"))
        batch.add_column(sa.Column("block", SEQUENCE, nullable=False, server_default="0"))
        batch.add_column(sa.Column("legacy", SEQUENCE, nullable=False, server_default="0"))
    # Events chained before this revision end at the head: the sealer closes them
    # into signed blocks first; every later event must be in a block.
    op.execute("UPDATE audit_head SET allocated = seq, legacy = seq")
    if postgresql:
        start = bind.execute(sa.text("SELECT coalesce(max(seq), 0) + 1 FROM audit_event"))
        op.execute(f"CREATE SEQUENCE audit_event_id START WITH {int(start.scalar_one())}")
    op.create_table(
        "audit_block",
        sa.Column("number", SEQUENCE, primary_key=True, autoincrement=False),
        sa.Column("first_position", SEQUENCE, nullable=False),
        sa.Column("last_position", SEQUENCE, nullable=False),
        sa.Column("root", sa.String(64), nullable=False),
        sa.Column("head", sa.String(64), nullable=False),  # chain hash at last_position
        sa.Column("sealed", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kid", sa.String(128), nullable=False),
        sa.Column("statement", sa.LargeBinary(), nullable=False),  # the signed JSON
        sa.Column("signature", sa.Text(), nullable=False),  # compact JWS over it
        sa.UniqueConstraint("first_position", name="uq_audit_block_first"),
    )


def downgrade() -> None:
    bind = op.get_bind()
    renumbered = bind.execute(
        sa.text("SELECT count(*) FROM audit_event WHERE position IS NULL OR position <> seq")
    ).scalar_one()
    if renumbered:  # the earlier chain is numbered by id: these events cannot be on it
        raise RuntimeError(
            f"{renumbered} audit events are unsealed or chained out of id order: "
            "a downgrade past 0012 would lose them"
        )
    op.drop_table("audit_block")
    if bind.dialect.name == "postgresql":
        op.execute("DROP SEQUENCE IF EXISTS audit_event_id")
    with op.batch_alter_table("audit_head") as batch:
        batch.drop_column("legacy")
        batch.drop_column("block")
        batch.drop_column("allocated")
    op.drop_index("ix_audit_event_unsealed", table_name="audit_event")
    op.drop_index("uq_audit_event_position", table_name="audit_event")
    with op.batch_alter_table("audit_event") as batch:
        batch.drop_column("block")
        batch.drop_column("position")
        batch.alter_column("prev_hash", existing_type=sa.String(64), nullable=False)
        batch.alter_column("hash", existing_type=sa.String(64), nullable=False)
