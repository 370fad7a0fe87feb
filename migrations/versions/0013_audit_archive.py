"""Audit retention (docs/architecture.md §9, "Retention"): archived segments and
the database's guard over the trail.

``audit_segment`` records each run of signed blocks moved out of ``audit_event``
into a file (its digest and a signed statement stay in the database). Triggers
(``storage/audit_guard.py``) refuse to change a sealed event, an access row, a
block or a segment, to delete an event no segment holds, and to move the head
backwards. The event kind column grows to 128 characters (an operator command's
name is part of it).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from ehr_service.storage import audit_guard

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

SEQUENCE = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
INSTANT = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "audit_segment",
        sa.Column("number", SEQUENCE, primary_key=True, autoincrement=False),
        sa.Column("first_block", SEQUENCE, nullable=False),
        sa.Column("last_block", SEQUENCE, nullable=False),
        sa.Column("first_position", SEQUENCE, nullable=False),
        sa.Column("last_position", SEQUENCE, nullable=False),
        sa.Column("first_seq", SEQUENCE, nullable=False),
        sa.Column("last_seq", SEQUENCE, nullable=False),
        sa.Column("events", SEQUENCE, nullable=False),
        sa.Column("last_recorded", INSTANT, nullable=False),
        sa.Column("file", sa.String(255), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("bytes", SEQUENCE, nullable=False),
        sa.Column("archived", INSTANT, nullable=False),
        sa.Column("kid", sa.String(128), nullable=False),
        sa.Column("statement", sa.LargeBinary(), nullable=False),
        sa.Column("signature", sa.Text(), nullable=False),
        sa.UniqueConstraint("first_block", name="uq_audit_segment_first_block"),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("audit_event", "kind", type_=sa.String(128), existing_nullable=False)
    # SQLite does not enforce a VARCHAR length: nothing to change there.
    audit_guard.install(op.get_bind())


def downgrade() -> None:
    bind = op.get_bind()
    audit_guard.drop(bind)
    archived = bind.execute(sa.text("SELECT count(*) FROM audit_segment")).scalar_one()
    if archived:  # the chain's start lives in the segment files: the earlier code cannot walk it
        audit_guard.install(bind)
        raise RuntimeError(f"{archived} audit segments are archived: a downgrade past 0013 "
                           "would leave a chain the earlier verifier cannot walk")  # fmt: skip
    op.drop_table("audit_segment")
