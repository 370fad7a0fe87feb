"""The Citus layout (``ehr-service migrate --citus``, docs/scale.md): the
patient-owned tables hash-distributed by compartment patient id and co-located,
so that a resident's whole record (resources, history, index rows, consent
refusals) lives on one shard.

- The distribution column is NOT NULL and leads every primary and unique key.
  Resources outside any record (Organization, Practitioner, ...) carry the
  sentinel ``UNOWNED`` there, which no FHIR id can be; the storage layer writes
  it for ``None`` and reads it back as ``None`` (``owner_key``, ``owner_of``).
- A logical id stays unique across shards through ``resource_id_claim``
  (distributed by the id itself), written by the application in the writing
  transaction (storage.claims); it also says on which shard a resource is.
- The catalogue, partners, identity registers, health cards and conditional keys
  are reference tables (a copy on every node).
- The audit tables, the exchange messages and outbox, the recognition facts, the
  export jobs, the CDS cards and the migration version stay on the coordinator as
  Citus local tables: in the cluster's metadata, so that a service connected to
  any node reads and writes them (routed to the coordinator, in the same
  distributed transaction). One sealer at a time (the head row's lock), the audit
  guard triggers (storage.audit_guard) on the coordinator's shards, and the
  outbox stamped there (``_OUTBOX_STAMP``): its order and the transaction id of
  the feed's settle rule come from the coordinator whichever node wrote the row.

Applied once, to an empty database at the head migration, with the Citus
extension created and the worker nodes added.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from sqlalchemy import Connection, Engine, text

from ehr_service.storage.partitioning import engine_fact

CLAIM = "resource_id_claim"
# No FHIR id ([A-Za-z0-9.-]{1,64}) is this: the record of resources outside any record.
UNOWNED = "~"
# table -> its compartment patient column; all co-located with resource.
DISTRIBUTED: dict[str, str] = {
    "resource": "compartment_patient_id",
    "resource_version": "compartment_patient_id",
    **{
        f"search_{kind}": "compartment_patient_id"
        for kind in ("string", "token", "date", "reference", "quantity", "number", "uri")
    },
    "search_composite": "compartment_patient_id",
    "consent_refusal": "patient_id",
}
REFERENCE = (
    "recognition_edition",
    "recognition_item",
    "recognition_code_map",
    "exchange_partner",
    "resident_id_number",
    "record_number",
    "health_record_number",
    "health_record_sequence",
    "health_card",
    "recognition_service_item",
    "conditional_create_key",
)
COORDINATOR = (
    "alembic_version",
    "audit_event",
    "audit_access",
    "audit_block",
    "audit_segment",
    "audit_head",
    "exchange_message",
    "exchange_outbox",
    "recognition_fact",
    "bulk_export_job",
    "cds_card",
)
# The outbox's position (``seq``) and the writing transaction's id (``txid``, the
# feed's settle rule: storage.exchange) from the coordinator, where the row is
# written, not from the node the statement came through: a worker's sequence hands
# out its own range, and its transaction ids are of another node.
_OUTBOX_STAMP = (
    "CREATE OR REPLACE FUNCTION exchange_outbox_stamp() RETURNS trigger "
    "LANGUAGE plpgsql AS $$ BEGIN "
    "NEW.seq := nextval('exchange_outbox_seq_seq'); "
    "NEW.txid := pg_current_xact_id()::text::bigint; "
    "RETURN NEW; END $$",
    "CREATE TRIGGER exchange_outbox_stamp BEFORE INSERT ON exchange_outbox "
    "FOR EACH ROW EXECUTE FUNCTION exchange_outbox_stamp()",
)
_known: weakref.WeakKeyDictionary[Engine, bool] = weakref.WeakKeyDictionary()
# Whether the transaction this context runs in is on the Citus layout (set by
# storage.database for each transaction; the SQL builders read it).
_ACTIVE: ContextVar[bool] = ContextVar("citus_layout", default=False)


class CitusError(Exception):
    pass


def is_citus(conn: Connection) -> bool:
    """Whether this database's resource table is distributed (cached per engine)."""
    return engine_fact(_known, conn, _distributed)


def _distributed(conn: Connection) -> bool:
    has_citus = conn.execute(
        text("SELECT to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL")
    ).scalar_one()
    return bool(has_citus) and bool(
        conn.execute(
            text(
                "SELECT EXISTS (SELECT 1 FROM pg_dist_partition "
                "WHERE logicalrelid = to_regclass('resource'))"
            )
        ).scalar_one()
    )


def active() -> bool:
    """Whether the SQL being built is for the Citus layout."""
    return _ACTIVE.get()


@contextmanager
def layout(citus: bool) -> Iterator[None]:
    token = _ACTIVE.set(citus)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def owner_key(patient: str | None) -> str | None:
    """The stored distribution value of a compartment patient (``None``: outside any
    record); unchanged outside the Citus layout."""
    if patient is None and active():
        return UNOWNED
    return patient


def owner_of(stored: str | None) -> str | None:
    """The compartment patient of a stored distribution value."""
    return None if stored == UNOWNED else stored


def distribute(conn: Connection) -> list[str]:
    """Lay the tables out for Citus (empty tables only); returns the tables
    distributed or made reference tables. Already laid out: nothing to do."""
    if conn.dialect.name != "postgresql":
        raise CitusError("the Citus layout needs PostgreSQL")
    if not conn.execute(
        text("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')")
    ).scalar_one():
        raise CitusError("the citus extension is not created in this database")
    if conn.execute(text(f"SELECT to_regclass('{CLAIM}') IS NOT NULL")).scalar_one():
        return []
    if conn.execute(text("SELECT EXISTS (SELECT 1 FROM pg_partitioned_table)")).scalar_one():
        raise CitusError("the database is hash-partitioned: lay out Citus on a new database")
    for table in [*DISTRIBUTED, *REFERENCE]:
        if conn.execute(text(f'SELECT EXISTS (SELECT 1 FROM "{table}")')).scalar_one():  # noqa: S608
            raise CitusError(f"{table} holds rows: lay out Citus on a new, empty database")
    # Functions before any distributed table (Citus distributes a function created
    # later in the transaction over one connection per node, and refuses).
    for statement in _OUTBOX_STAMP:
        conn.execute(text(statement))
    # The event ids' sequence on every node (each hands out its own range): Citus
    # propagates a sequence that a table of its metadata uses as a default.
    conn.execute(
        text("ALTER TABLE audit_event ALTER COLUMN seq SET DEFAULT nextval('audit_event_id')")
    )
    for table, column in DISTRIBUTED.items():
        _lead_keys(conn, table, column)
        _replica_identity(conn, table)
    conn.execute(
        text(
            f"CREATE TABLE {CLAIM} (res_type varchar(64) NOT NULL, "
            "res_id text NOT NULL CHECK (length(res_id) <= 64), "
            "compartment_patient_id text NOT NULL, PRIMARY KEY (res_type, res_id))"
        )
    )
    for table, column in DISTRIBUTED.items():
        colocate = "none" if table == "resource" else "resource"
        conn.execute(
            text("SELECT create_distributed_table(:t, :c, colocate_with => :w)"),
            {"t": table, "c": column, "w": colocate},
        )
    conn.execute(
        text(f"SELECT create_distributed_table('{CLAIM}', 'res_id', colocate_with => 'none')")
    )
    for table in REFERENCE:
        conn.execute(text("SELECT create_reference_table(:t)"), {"t": table})
    for table in COORDINATOR:
        conn.execute(text("SELECT citus_add_local_table_to_metadata(:t)"), {"t": table})
    if conn.engine in _known:
        del _known[conn.engine]
    return [*DISTRIBUTED, CLAIM, *REFERENCE, *COORDINATOR]


def _replica_identity(conn: Connection, table: str) -> None:
    """A table without a primary key (the search index rows) gets the whole row as
    its replica identity: Citus moves shards online (adding a worker, rebalancing)
    by logical replication, which must tell the rows of an update or delete apart."""
    has_key = conn.execute(
        text(
            "SELECT EXISTS (SELECT 1 FROM pg_constraint "
            "WHERE conrelid = CAST(:t AS regclass) AND contype = 'p')"
        ),
        {"t": table},
    ).scalar_one()
    if not has_key:
        conn.execute(text(f'ALTER TABLE "{table}" REPLICA IDENTITY FULL'))


def _lead_keys(conn: Connection, table: str, column: str) -> None:
    """NOT NULL distribution column, leading every primary and unique key."""
    # text, not varchar: the driver binds strings as text, and Citus prunes shards
    # only on a comparison of the column itself (``varchar::text = $1`` is not one).
    conn.execute(
        text(
            f'ALTER TABLE "{table}" ALTER COLUMN "{column}" TYPE text, '
            f'ALTER COLUMN "{column}" SET NOT NULL, '
            f'ADD CONSTRAINT "ck_{table}_{column}_length" CHECK (length("{column}") <= 64)'
        )
    )
    constraints = conn.execute(
        text(
            "SELECT conname, contype, "
            "ARRAY(SELECT attname FROM unnest(conkey) WITH ORDINALITY AS k(n, o) "
            "      JOIN pg_attribute ON attrelid = conrelid AND attnum = k.n ORDER BY k.o) "
            "FROM pg_constraint WHERE conrelid = CAST(:t AS regclass) AND contype IN ('p', 'u')"
        ),
        {"t": table},
    ).all()
    for name, kind, cols in constraints:
        if cols[:1] == [column]:
            continue
        wanted = ", ".join(f'"{c}"' for c in [column, *(c for c in cols if c != column)])
        shape = "PRIMARY KEY" if kind == "p" else "UNIQUE"
        conn.execute(text(f'ALTER TABLE "{table}" DROP CONSTRAINT "{name}"'))
        conn.execute(text(f'ALTER TABLE "{table}" ADD CONSTRAINT "{name}" {shape} ({wanted})'))
    unique = (
        conn.execute(
            text(
                "SELECT indexname FROM pg_indexes WHERE tablename = :t "
                "AND indexdef LIKE 'CREATE UNIQUE%' AND indexname NOT IN "
                "(SELECT conname FROM pg_constraint WHERE conrelid = CAST(:t AS regclass))"
            ),
            {"t": table},
        )
        .scalars()
        .all()
    )
    if unique:
        raise CitusError(f"{table} has unique indexes without its patient column: {unique}")
