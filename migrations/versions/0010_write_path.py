"""The write path holds for any input: index values of any length, the audit head.

- Index text columns become unbounded ``text`` (PostgreSQL refused values over 255
  characters with a 500). Their B-tree indexes are on a bounded key, the first
  ``KEY_CHARS`` characters (``substr(col, 1, 200)``), since PostgreSQL cannot index
  a value over ~2.7 kB; the search compiler compares the key and then the whole
  value, so matching stays exact (``storage.tables.text_key``).
- Audit events keep the resource acted on as a column (``AuditEvent?entity=``),
  and ``recorded`` is indexed (``AuditEvent?date=``).
- The audit chain's head row exists from the start: on a fresh database the
  first concurrent appenders found nothing to lock and collided on event 1.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

KEY = "substr({}, 1, 200)"
GENESIS = "0" * 64

# table -> text columns (varchar(255)/(512) before)
COLUMNS = {
    "search_string": ("value_norm", "value_exact"),
    "search_token": ("system", "code", "text_norm"),
    "search_reference": ("url", "identifier_system", "identifier_value"),
    "search_quantity": ("system", "code"),
    "search_uri": ("value",),
    "search_composite": ("c1_system", "c1_code", "c2_system", "c2_code"),
}
# index -> (table, columns, where); a text column in KEYED is indexed by its key
INDEXES = {
    "ix_search_string_value": ("search_string", ("res_type", "param", "value_norm"), None),
    "ix_search_token_code": ("search_token", ("res_type", "param", "code", "system"), None),
    "ix_search_reference_url": (
        "search_reference",
        ("res_type", "param", "url"),
        "url IS NOT NULL",
    ),
    "ix_search_reference_identifier": (
        "search_reference",
        ("res_type", "param", "identifier_value"),
        "identifier_value IS NOT NULL",
    ),
    "ix_search_quantity_value": ("search_quantity", ("res_type", "param", "code", "value"), None),
    "ix_search_uri_value": ("search_uri", ("res_type", "param", "value"), None),
    "ix_search_composite_code": ("search_composite", ("res_type", "param", "c1_code"), None),
}
KEYED = {"value_norm", "code", "system", "url", "identifier_value", "value"}
PATTERN = {"ix_search_string_value"}  # prefix LIKE: text_pattern_ops on PostgreSQL


def _part(name: str, table: str, column: str, postgresql: bool, keyed: bool) -> str:
    if column not in KEYED or (table == "search_quantity" and column == "value"):  # a number
        return column
    pattern = postgresql and name in PATTERN
    if keyed:
        return KEY.format(column) + (" text_pattern_ops" if pattern else "")
    return column + (" varchar_pattern_ops" if pattern else "")


def _create(name: str, postgresql: bool, keyed: bool) -> None:
    table, columns, where = INDEXES[name]
    parts = ", ".join(_part(name, table, c, postgresql, keyed) for c in columns)
    sql = f"CREATE INDEX {name} ON {table} ({parts})"
    if where:
        sql += f" WHERE {where}"
    op.execute(sql)


def _acted_on(content: bytes) -> str | None:
    for entity in json.loads(content).get("entity") or ():
        if (entity.get("role") or {}).get("code") != "1" and "what" in entity:
            return str(entity["what"].get("reference"))
    return None


def _backfill_entities(bind: sa.Connection) -> None:
    """Events recorded before: their entity column from their hashed JSON (what
    ``audit verify`` checks it against)."""
    after = 0
    while True:
        rows = bind.execute(
            sa.text("SELECT seq, content FROM audit_event WHERE seq > :a ORDER BY seq LIMIT 2000"),
            {"a": after},
        ).all()
        if not rows:
            return
        updates = [{"e": e, "s": seq} for seq, content in rows if (e := _acted_on(bytes(content)))]
        if updates:
            bind.execute(sa.text("UPDATE audit_event SET entity = :e WHERE seq = :s"), updates)
        after = rows[-1][0]


def upgrade() -> None:
    bind = op.get_bind()
    postgresql = bind.dialect.name == "postgresql"
    for name in INDEXES:
        op.execute(f"DROP INDEX IF EXISTS {name}")
    if postgresql:
        for table, columns in COLUMNS.items():
            changes = ", ".join(f"ALTER COLUMN {c} TYPE text" for c in columns)
            op.execute(f"ALTER TABLE {table} {changes}")
    for name in INDEXES:
        _create(name, postgresql, keyed=True)
    op.add_column("audit_event", sa.Column("entity", sa.Text(), nullable=True))
    _backfill_entities(bind)
    op.create_index("ix_audit_event_entity", "audit_event", ["entity"])
    op.create_index("ix_audit_event_recorded", "audit_event", ["recorded"])
    head = sa.table("audit_head", sa.column("id"), sa.column("seq"), sa.column("hash"))
    if bind.execute(sa.select(sa.func.count()).select_from(head)).scalar_one() == 0:
        op.execute(head.insert().values(id=1, seq=0, hash=GENESIS))


def downgrade() -> None:
    op.drop_index("ix_audit_event_recorded", table_name="audit_event")
    op.drop_index("ix_audit_event_entity", table_name="audit_event")
    with op.batch_alter_table("audit_event") as batch:
        batch.drop_column("entity")
    bind = op.get_bind()
    postgresql = bind.dialect.name == "postgresql"
    for name in INDEXES:
        op.execute(f"DROP INDEX IF EXISTS {name}")
    if postgresql:
        for table, columns in COLUMNS.items():
            width = {"url": 512, "value": 512}
            changes = ", ".join(
                f"ALTER COLUMN {c} TYPE varchar({width.get(c, 255)}) USING left({c}, "
                f"{width.get(c, 255)})"
                for c in columns
            )
            op.execute(f"ALTER TABLE {table} {changes}")
    for name in INDEXES:
        _create(name, postgresql, keyed=False)
