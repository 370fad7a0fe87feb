"""Writing search index rows, in the transaction that writes the resource."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, Table, delete

from ehr_service.fhir.search.values import IndexRows
from ehr_service.storage import citus
from ehr_service.storage.bulk import bulk_insert
from ehr_service.storage.tables import (
    INDEX_TABLES,
    search_composite,
    search_date,
    search_number,
    search_quantity,
    search_reference,
    search_string,
    search_token,
    search_uri,
)

# IndexRows field -> (table, value columns after `param`)
_LAYOUT: dict[str, tuple[Table, tuple[str, ...]]] = {
    "strings": (search_string, ("value_norm", "value_exact")),
    "tokens": (search_token, ("system", "code", "text_norm")),
    "dates": (search_date, ("low", "high")),
    "references": (
        search_reference,
        ("target_type", "target_id", "url", "identifier_system", "identifier_value"),
    ),
    "quantities": (search_quantity, ("value", "system", "code")),
    "numbers": (search_number, ("value",)),
    "uris": (search_uri, ("value",)),
    "composites": (
        search_composite,
        ("c1_system", "c1_code", "c2_system", "c2_code", "c2_value", "c2_low", "c2_high"),
    ),
}


def insert_index(
    conn: Connection, entries: Sequence[tuple[str, str, str | None, IndexRows]]
) -> None:
    """Insert the index rows of resources (type, id, compartment patient, rows)."""
    for name, (table, columns) in _LAYOUT.items():
        rows = [
            (resource_type, resource_id, citus.owner_key(patient_id), *row)
            for resource_type, resource_id, patient_id, index in entries
            for row in getattr(index, name)
        ]
        bulk_insert(
            conn, table, ("res_type", "res_id", "compartment_patient_id", "param", *columns), rows
        )


def delete_index(
    conn: Connection, resource_type: str, resource_id: str, owner: str | None = None
) -> None:
    """Remove a resource's index rows (on the Citus layout, ``owner``: its record's
    stored distribution value, so that this is a single-shard delete)."""
    for table in INDEX_TABLES:
        statement = delete(table).where(
            table.c.res_type == resource_type, table.c.res_id == resource_id
        )
        if owner is not None:
            statement = statement.where(table.c.compartment_patient_id == owner)
        conn.execute(statement)


def clear_index(conn: Connection, resource_type: str | None = None) -> None:
    """Remove every index row (of one type), before a reindex."""
    for table in INDEX_TABLES:
        statement = delete(table)
        if resource_type is not None:
            statement = statement.where(table.c.res_type == resource_type)
        conn.execute(statement)


def replace_index(
    conn: Connection, entries: Sequence[tuple[str, str, str | None, IndexRows]]
) -> None:
    """Rewrite the index rows of existing resources (reindex)."""
    for resource_type, resource_id, _patient, _rows in entries:
        delete_index(conn, resource_type, resource_id)
    insert_index(conn, entries)
