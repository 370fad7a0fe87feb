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


def _key_of_float(value: float | int) -> str:
    if isinstance(value, float):
        if value != value:  # NaN: indexed as nothing sensible; zero keeps the row valid
            return encode(Decimal(0))
        value = max(-1e308, min(1e308, value))  # ±inf from an older downgrade
        return encode(Decimal(repr(value)))
    return encode(Decimal(value))


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table, column in COLUMNS:
            op.execute(
                f"ALTER TABLE {table} ALTER COLUMN {column} TYPE numeric "
                f"USING {column}::text::numeric"
            )
    else:
        _rewrite_sqlite(_key_of_float, to_text=True)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table, column in COLUMNS:
            op.execute(  # lossy by nature: beyond a double's range is clamped
                f"ALTER TABLE {table} ALTER COLUMN {column} TYPE double precision USING "
                f"(CASE WHEN {column} > 1e308 THEN 1e308 WHEN {column} < -1e308 THEN -1e308 "
                f"WHEN abs({column}) < 1e-300 THEN 0 ELSE {column} END)::double precision"
            )
    else:
        _rewrite_sqlite(lambda v: max(-1e308, min(1e308, float(decode(v)))), to_text=False)
