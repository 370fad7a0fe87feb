"""Fast multi-row inserts for the hot write paths (docs/architecture.md §4).

PostgreSQL takes rows through ``COPY ... FROM STDIN`` (psycopg 3); SQLite
through the driver's ``executemany`` with positional parameters. Both skip
SQLAlchemy's per-row dictionary binding, which dominates bulk writes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
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
    Numeric,
    String,
    Table,
    insert,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.types import TypeDecorator, TypeEngine

from ehr_service.storage.numbers import ExactNumber, as_decimal, encode


def _sqlite_value(value: Any) -> Any:
    # The same text form SQLAlchemy's SQLite DateTime stores (naive UTC).
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


def _sqlite_number(value: Any) -> Any:
    return None if value is None else encode(as_decimal(value))


def _pg_number(value: Any) -> Any:
    return None if value is None else as_decimal(value)


def _converters(
    table: Table, columns: Sequence[str], sqlite: bool
) -> list[tuple[int, Callable[[Any], Any]]]:
    """(position, conversion) of the columns whose values are not written as they
    are: exact numbers by their column's form, and on SQLite timestamps as text."""
    out: list[tuple[int, Callable[[Any], Any]]] = []
    for n, name in enumerate(columns):
        column_type = table.c[name].type
        if isinstance(column_type, ExactNumber):
            out.append((n, _sqlite_number if sqlite else _pg_number))
        elif sqlite and isinstance(column_type, DateTime | TypeDecorator):
            out.append((n, _sqlite_value))
    return out


def _converted(
    rows: Sequence[Sequence[Any]], conversions: list[tuple[int, Callable[[Any], Any]]]
) -> Sequence[Sequence[Any]]:
    if not conversions:
        return rows
    out = []
    for row in rows:
        values = list(row)
        for n, convert in conversions:
            values[n] = convert(values[n])
        out.append(values)
    return out


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
    (Numeric, "numeric"),
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
        converted = _converted(rows, _converters(table, columns, sqlite=False))
        with driver.cursor() as cursor, cursor.copy(statement) as copy:
            copy.set_types([_pg_type(table.c[name].type) for name in columns])
            for row in converted:
                copy.write_row(row)
    elif dialect == "sqlite":
        driver = conn.connection.driver_connection
        assert driver is not None
        placeholders = ", ".join("?" for _ in columns)
        # Table and column names come from our metadata, never from a request.
        statement = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({placeholders})"  # noqa: S608
        driver.executemany(statement, _converted(rows, _converters(table, columns, sqlite=True)))
    else:  # any other backend: portable, slower
        conn.execute(insert(table), [dict(zip(columns, row, strict=True)) for row in rows])
