"""The database's own guard over the audit trail (docs/architecture.md §9, "Retention").

Triggers refuse, whoever asks, to:

- change an event once it is in a signed block, or an access row ever;
- delete an event or access row that no archived segment holds (``audit_segment``:
  only ``ehr-service audit archive`` removes rows, in the transaction that records
  the segment whose file holds them);
- change or delete a signed block or an archived segment's record;
- move the sealed head backwards.

The application never needs any of these, so a bug, an injected statement or an
operator with only the service's credentials cannot rewrite the trail. Someone
who may change the schema can drop the triggers; ``audit verify`` still names what
they then changed (the chain, the signed blocks, the anchor file and the segment
files all disagree with it). Installed by migration 0013, and again wherever a
table is re-created (``migrate --partitions``).
"""

from __future__ import annotations

from sqlalchemy import Connection, text

REFUSED = "audit records are append-only"

_HELD = (  # an archived segment holds the event at this position
    "EXISTS (SELECT 1 FROM audit_segment s "
    "WHERE OLD.position BETWEEN s.first_position AND s.last_position)"
)
_ACCESS_HELD = (  # ... or the event this access row belongs to
    "EXISTS (SELECT 1 FROM audit_event e JOIN audit_segment s "
    "ON e.position BETWEEN s.first_position AND s.last_position WHERE e.seq = OLD.seq)"
)

_POSTGRESQL_FUNCTION = f"""
CREATE OR REPLACE FUNCTION audit_guard() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  -- the table, also when the trigger fires on a Citus shard of it (audit_event_102008)
  guarded text := regexp_replace(TG_TABLE_NAME, '_[0-9]+$', '');
BEGIN
  IF TG_OP = 'TRUNCATE' THEN
    NULL;
  ELSIF guarded = 'audit_event' THEN
    IF TG_OP = 'UPDATE' AND OLD.block IS NULL THEN RETURN NEW; END IF;
    IF TG_OP = 'DELETE' AND {_HELD} THEN RETURN OLD; END IF;
  ELSIF guarded = 'audit_access' THEN
    IF TG_OP = 'DELETE' AND {_ACCESS_HELD} THEN RETURN OLD; END IF;
  ELSIF guarded = 'audit_head' THEN
    IF NEW.seq >= OLD.seq AND NEW.block >= OLD.block THEN RETURN NEW; END IF;
  END IF;
  RAISE EXCEPTION '{REFUSED}: % of % refused', TG_OP, guarded
    USING ERRCODE = 'insufficient_privilege';
END $$
"""

# table -> the row operations guarded (TRUNCATE is refused on all but the head)
_GUARDED = {
    "audit_event": "UPDATE OR DELETE",
    "audit_access": "UPDATE OR DELETE",
    "audit_block": "UPDATE OR DELETE",
    "audit_segment": "UPDATE OR DELETE",
    "audit_head": "UPDATE",
}


def _sqlite_triggers() -> dict[str, str]:
    """name -> CREATE TRIGGER (SQLite: a WHEN clause per case; a trigger on a
    table also turns off SQLite's truncate shortcut for ``DELETE FROM t``)."""

    def refuse(name: str, when: str, on: str) -> str:
        clause = f" WHEN {when}" if when else ""
        return (
            f"CREATE TRIGGER {name} BEFORE {on}{clause} BEGIN "
            f"SELECT RAISE(ABORT, '{REFUSED}: {on.split()[0]} of {on.split()[-1]} refused'); END"
        )

    return {
        "audit_event_kept": refuse("audit_event_kept", "OLD.block IS NOT NULL",
                                   "UPDATE ON audit_event"),
        "audit_event_held": refuse("audit_event_held", f"NOT {_HELD}", "DELETE ON audit_event"),
        "audit_access_kept": refuse("audit_access_kept", "", "UPDATE ON audit_access"),
        "audit_access_held": refuse("audit_access_held", f"NOT {_ACCESS_HELD}",
                                    "DELETE ON audit_access"),
        "audit_block_kept": refuse("audit_block_kept", "", "UPDATE ON audit_block"),
        "audit_block_held": refuse("audit_block_held", "", "DELETE ON audit_block"),
        "audit_segment_kept": refuse("audit_segment_kept", "", "UPDATE ON audit_segment"),
        "audit_segment_held": refuse("audit_segment_held", "", "DELETE ON audit_segment"),
        "audit_head_forward": refuse("audit_head_forward",
                                     "NEW.seq < OLD.seq OR NEW.block < OLD.block",
                                     "UPDATE ON audit_head"),
    }  # fmt: skip


def install(conn: Connection) -> None:
    """Create (or re-create) the guard triggers."""
    drop(conn)
    if conn.dialect.name == "postgresql":
        conn.execute(text(_POSTGRESQL_FUNCTION))
        for table, operations in _GUARDED.items():
            conn.execute(
                text(
                    f"CREATE TRIGGER audit_guard BEFORE {operations} ON {table} "
                    "FOR EACH ROW EXECUTE FUNCTION audit_guard()"
                )
            )
            if table != "audit_head":
                conn.execute(
                    text(
                        f"CREATE TRIGGER audit_guard_truncate BEFORE TRUNCATE ON {table} "
                        "FOR EACH STATEMENT EXECUTE FUNCTION audit_guard()"
                    )
                )
        return
    for statement in _sqlite_triggers().values():
        conn.execute(text(statement))


def drop(conn: Connection) -> None:
    """Remove the guard (a schema change: what an owner of the schema could do;
    the tests use it to tamper as such an owner would)."""
    if conn.dialect.name == "postgresql":
        for table in _GUARDED:
            conn.execute(text(f"DROP TRIGGER IF EXISTS audit_guard ON {table}"))
            conn.execute(text(f"DROP TRIGGER IF EXISTS audit_guard_truncate ON {table}"))
        conn.execute(text("DROP FUNCTION IF EXISTS audit_guard()"))
        return
    for name in _sqlite_triggers():
        conn.execute(text(f"DROP TRIGGER IF EXISTS {name}"))


def installed(conn: Connection) -> bool:
    """Whether the guard is in place (``/readyz`` and ``audit verify`` report it)."""
    if conn.dialect.name == "postgresql":
        query = "SELECT count(*) FROM pg_trigger WHERE tgname = 'audit_guard' AND NOT tgisinternal"
        return int(conn.execute(text(query)).scalar_one()) >= len(_GUARDED)
    names = ", ".join(f"'{n}'" for n in _sqlite_triggers())
    query = f"SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND name IN ({names})"  # noqa: S608
    return int(conn.execute(text(query)).scalar_one()) == len(_sqlite_triggers())
