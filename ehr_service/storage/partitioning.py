"""Hash partitioning of the patient-owned tables by compartment patient id
(PostgreSQL; ``ehr-service migrate --partitions N``; docs/scale.md).

A resident's whole record (current resources, their history and search index
rows, consent refusals, access log) hashes to one partition, as it would to one
shard of a Citus distributed table. PostgreSQL requires every unique constraint
of a partitioned table to include the partition key, so:

- each primary key or unique constraint gains the patient column, as
  ``UNIQUE NULLS NOT DISTINCT`` where that column is nullable (resources outside
  any record, such as Organizations, share the NULL key);
- the one uniqueness that cannot include it, a resource's logical id
  ``(res_type, res_id)``, lives in ``resource_id_claim``, a table partitioned by
  that id and kept by triggers on ``resource``: a second resource with the same
  id in another record is a unique violation, as it is without partitions.

Applied once, to an empty database at the head migration; later migrations run
on the partitioned tables as they are (columns and indexes propagate).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

from sqlalchemy import Connection, Engine, text

from ehr_service.storage import audit_guard

CLAIM = "resource_id_claim"
# table -> its compartment patient column
PARTITIONED: dict[str, str] = {
    "resource": "compartment_patient_id",
    "resource_version": "compartment_patient_id",
    **{
        f"search_{kind}": "compartment_patient_id"
        for kind in (
            "string",
            "token",
            "date",
            "reference",
            "quantity",
            "number",
            "uri",
            "composite",
        )
    },
    "consent_refusal": "patient_id",
    "audit_access": "patient_id",
}
_known: weakref.WeakKeyDictionary[Engine, bool] = weakref.WeakKeyDictionary()


class PartitioningError(Exception):
    pass


def engine_fact(
    cache: weakref.WeakKeyDictionary[Engine, bool],
    conn: Connection,
    probe: Callable[[Connection], bool],
) -> bool:
    """A fact of a PostgreSQL database's layout, probed once per engine (False on
    SQLite)."""
    if conn.dialect.name != "postgresql":
        return False
    if conn.engine not in cache:
        cache[conn.engine] = probe(conn)
    return cache[conn.engine]


def is_partitioned(conn: Connection) -> bool:
    """Whether this database's resource table is partitioned (cached per engine)."""
    return engine_fact(_known, conn, lambda c: bool(c.execute(text(
        "SELECT EXISTS (SELECT 1 FROM pg_partitioned_table "
        "WHERE partrelid = to_regclass('resource'))"
    )).scalar_one()))  # fmt: skip


def partition(conn: Connection, partitions: int) -> list[str]:
    """Re-create the patient-owned tables hash-partitioned (empty tables only);
    returns the tables changed. Already partitioned: nothing to do."""
    if conn.dialect.name != "postgresql":
        raise PartitioningError("partitioning needs PostgreSQL")
    if int(conn.execute(text("SHOW server_version_num")).scalar_one()) < 150000:
        raise PartitioningError("partitioning needs PostgreSQL 15 or later (NULLS NOT DISTINCT)")
    if not 2 <= partitions <= 1024:
        raise PartitioningError("partitions must be between 2 and 1024")
    changed = [table for table in PARTITIONED if not _is_partitioned_table(conn, table)]
    for table in changed:
        if conn.execute(text(f'SELECT EXISTS (SELECT 1 FROM "{table}")')).scalar_one():  # noqa: S608
            raise PartitioningError(f"{table} holds rows: partition a new, empty database")
    for table in changed:
        _rebuild(conn, table, PARTITIONED[table], partitions)
    if "resource" in changed:
        _claims(conn, partitions)
    if "audit_access" in changed:  # its guard went with the table it re-created
        audit_guard.install(conn)
    if conn.engine in _known:
        del _known[conn.engine]
    return changed


def _is_partitioned_table(conn: Connection, table: str) -> bool:
    return bool(
        conn.execute(
            text(
                "SELECT EXISTS (SELECT 1 FROM pg_partitioned_table "
                "WHERE partrelid = CAST(:t AS regclass))"
            ),
            {"t": table},
        ).scalar_one()
    )


def _rebuild(conn: Connection, table: str, key: str, partitions: int) -> None:
    columns = {
        r.attname: r.attnotnull
        for r in conn.execute(
            text(
                "SELECT attname, attnotnull FROM pg_attribute "
                "WHERE attrelid = CAST(:t AS regclass) AND attnum > 0 AND NOT attisdropped"
            ),
            {"t": table},
        )
    }
    if key not in columns:
        raise PartitioningError(f"{table} has no column {key}")
    constraints = conn.execute(
        text(
            "SELECT conname, contype, pg_get_constraintdef(oid) AS definition, "
            "ARRAY(SELECT attname FROM unnest(conkey) AS k "
            "      JOIN pg_attribute ON attrelid = conrelid AND attnum = k) AS cols "
            "FROM pg_constraint WHERE conrelid = CAST(:t AS regclass)"
        ),
        {"t": table},
    ).all()
    indexes = (
        conn.execute(
            text(
                "SELECT indexdef FROM pg_indexes WHERE tablename = :t AND indexname NOT IN "
                "(SELECT conname FROM pg_constraint WHERE conrelid = CAST(:t AS regclass))"
            ),
            {"t": table},
        )
        .scalars()
        .all()
    )
    serials = [  # (column, its sequence): kept, the new table's defaults draw from them
        (c, sequence)
        for c in columns
        if (
            sequence := conn.execute(
                text("SELECT pg_get_serial_sequence(:t, :c)"), {"t": table, "c": c}
            ).scalar_one()
        )
    ]
    for _, sequence in serials:
        conn.execute(text(f"ALTER SEQUENCE {sequence} OWNED BY NONE"))
    conn.execute(text(f'ALTER TABLE "{table}" RENAME TO "{table}_unpartitioned"'))
    conn.execute(
        text(
            f'CREATE TABLE "{table}" (LIKE "{table}_unpartitioned" INCLUDING DEFAULTS) '
            f'PARTITION BY HASH ("{key}")'
        )
    )
    conn.execute(text(f'DROP TABLE "{table}_unpartitioned"'))
    for name, kind, definition, cols in constraints:
        if kind in ("p", "u"):
            wanted = ", ".join(f'"{c}"' for c in [*cols, *([] if key in cols else [key])])
            if kind == "p" and columns[key]:
                definition = f"PRIMARY KEY ({wanted})"
            else:  # a nullable key cannot be in a primary key; NULL counts as one value
                definition = f"UNIQUE NULLS NOT DISTINCT ({wanted})"
        conn.execute(text(f'ALTER TABLE "{table}" ADD CONSTRAINT "{name}" {definition}'))
    for indexdef in indexes:
        conn.execute(text(indexdef))
    for remainder in range(partitions):
        conn.execute(
            text(
                f'CREATE TABLE "{table}_p{remainder}" PARTITION OF "{table}" '
                f"FOR VALUES WITH (MODULUS {partitions}, REMAINDER {remainder})"
            )
        )
    for column, sequence in serials:
        conn.execute(text(f'ALTER SEQUENCE {sequence} OWNED BY "{table}"."{column}"'))


def _claims(conn: Connection, partitions: int) -> None:
    """The logical id's uniqueness across partitions, kept by triggers."""
    conn.execute(
        text(
            f"CREATE TABLE {CLAIM} (res_type varchar(64) NOT NULL, res_id varchar(64) NOT NULL, "
            "PRIMARY KEY (res_type, res_id)) PARTITION BY HASH (res_id)"
        )
    )
    for remainder in range(partitions):
        conn.execute(
            text(
                f"CREATE TABLE {CLAIM}_p{remainder} PARTITION OF {CLAIM} "
                f"FOR VALUES WITH (MODULUS {partitions}, REMAINDER {remainder})"
            )
        )
    conn.execute(
        text(
            f"""
            CREATE FUNCTION {CLAIM}_keep() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              IF TG_OP = 'INSERT' THEN
                INSERT INTO {CLAIM} (res_type, res_id) VALUES (NEW.res_type, NEW.res_id);
              ELSE  -- a row moved to another record's partition is deleted, then inserted
                DELETE FROM {CLAIM} WHERE res_type = OLD.res_type AND res_id = OLD.res_id;
              END IF;
              RETURN NULL;
            END $$
            """  # noqa: S608 - table names are this module's constants
        )
    )
    conn.execute(
        text(
            f"CREATE TRIGGER {CLAIM}_keep AFTER INSERT OR DELETE ON resource "
            f"FOR EACH ROW EXECUTE FUNCTION {CLAIM}_keep()"
        )
    )
