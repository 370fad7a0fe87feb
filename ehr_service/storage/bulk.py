"""Fast multi-row inserts for the hot write paths (DESIGN.md §4).

PostgreSQL takes rows through ``COPY ... FROM STDIN`` (psycopg 3); SQLite
through the driver's ``executemany`` with positional parameters. Both skip
SQLAlchemy's per-row dictionary binding, which dominates bulk writes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
from sqlalchemy import (
    BigInteger,
    Boolean,
    Connection,
    DateTime,
    Float,
    Integer,
    LargeBinary,
    String,
    Table,
    insert,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.types import TypeDecorator, TypeEngine


def _sqlite_value(value: Any) -> Any:
    # The same text form SQLAlchemy's SQLite DateTime stores (naive UTC).
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


def _pg_type(column_type: TypeEngine[Any]) -> str:
    if isinstance(column_type, TypeDecorator):
        column_type = column_type.impl_instance
    for kind, name in _PG_TYPES:
        if isinstance(column_type, kind):
            return name
    raise TypeError(f"no COPY type for {column_type!r}")


_PG_TYPES: tuple[tuple[type[TypeEngine[Any]], str], ...] = (
    (Boolean, "bool"),
    (BigInteger, "int8"),
    (Integer, "int4"),
    (Float, "float8"),
    (LargeBinary, "bytea"),
    (DateTime, "timestamptz"),
    (String, "varchar"),
)


def bulk_insert(
    conn: Connection, table: Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    """Insert ``rows`` (tuples in ``columns`` order) into ``table``. A unique key
    taken is raised as SQLAlchemy's IntegrityError, whichever path ran."""
    if not rows:
        return
    try:
        _bulk_insert(conn, table, columns, rows)
    except (psycopg.errors.IntegrityError, sqlite3.IntegrityError) as exc:
        raise IntegrityError(f"bulk insert into {table.name}", None, exc) from exc


def _bulk_insert(
    conn: Connection, table: Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    dialect = conn.dialect.name
    if dialect == "postgresql":
        # Binary COPY: no text escaping of JSON content or timestamps.
        driver = conn.connection.driver_connection
        assert driver is not None
        statement = f"COPY {table.name} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)"
        with driver.cursor() as cursor, cursor.copy(statement) as copy:
            copy.set_types([_pg_type(table.c[name].type) for name in columns])
            for row in rows:
                copy.write_row(row)
    elif dialect == "sqlite":
        driver = conn.connection.driver_connection
        assert driver is not None
        placeholders = ", ".join("?" for _ in columns)
        # Table and column names come from our metadata, never from a request.
        statement = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({placeholders})"  # noqa: S608
        driver.executemany(statement, [tuple(_sqlite_value(v) for v in row) for row in rows])
    else:  # any other backend: portable, slower
        conn.execute(insert(table), [dict(zip(columns, row, strict=True)) for row in rows])
