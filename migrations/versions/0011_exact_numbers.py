"""Numbers in the search index exactly as written (R4 §3.1.1.5.1).

PostgreSQL: ``numeric`` instead of ``float8`` (the float's shortest text is
what the cast keeps, which is what was indexed). SQLite: the order-preserving
text key of ``storage.numbers``. Values indexed before from a float keep that
float's digits; ``ehr-service reindex`` indexes them again from the stored JSON.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01
"""

from __future__ import annotations

from decimal import Decimal

import sqlalchemy as sa
from alembic import op

from ehr_service.storage.numbers import decode, encode

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

COLUMNS = (("search_number", "value"), ("search_quantity", "value"), ("search_composite", "c2_value"))
BATCH = 5000


def _rewrite_sqlite(convert: object, to_text: bool) -> None:
    bind = op.get_bind()
    for table, column in COLUMNS:
        kinds = "('real', 'integer')" if to_text else "('text')"
        while True:
            rows = bind.execute(
                sa.text(
                    f"SELECT rowid, {column} FROM {table} "  # noqa: S608 - our own names
                    f"WHERE typeof({column}) IN {kinds} LIMIT {BATCH}"
                )
            ).all()
            if not rows:
                break
            bind.execute(
                sa.text(f"UPDATE {table} SET {column} = :v WHERE rowid = :r"),  # noqa: S608
                [{"v": convert(value), "r": rowid} for rowid, value in rows],  # type: ignore[operator]
            )


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table, column in COLUMNS:
            op.execute(
                f"ALTER TABLE {table} ALTER COLUMN {column} TYPE numeric "
                f"USING {column}::text::numeric"
            )
    else:
        _rewrite_sqlite(lambda v: encode(Decimal(repr(v)) if isinstance(v, float) else Decimal(v)),
                        to_text=True)  # fmt: skip


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table, column in COLUMNS:
            op.execute(
                f"ALTER TABLE {table} ALTER COLUMN {column} TYPE double precision "
                f"USING {column}::double precision"
            )
    else:
        _rewrite_sqlite(lambda v: float(decode(v)), to_text=False)
