"""Tables of DESIGN.md §4: current resources and their append-only versions.

Every patient-owned row carries ``compartment_patient_id`` so that a patient's
whole record can live on one shard when tables are hash-distributed by it.
Resource content is the JSON as stored after validation and the server's meta
update, serialised once (orjson) and kept as bytes: reads serve it unchanged.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    false,
)
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python.

    PostgreSQL keeps ``timestamptz``; SQLite keeps naive UTC text, which sorts
    and compares correctly because every value is UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise ValueError("UTCDateTime needs a timezone-aware datetime")
        moment: datetime = value.astimezone(UTC)
        return moment.replace(tzinfo=None) if dialect.name == "sqlite" else moment

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime from the database, got {type(value).__name__}")
        moment: datetime = value
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


RESOURCE_TYPE = String(64)
RESOURCE_ID = String(64)
SEQUENCE = BigInteger().with_variant(Integer(), "sqlite")

resource = Table(
    "resource",
    metadata,
    Column("res_type", RESOURCE_TYPE, primary_key=True),
    Column("res_id", RESOURCE_ID, primary_key=True),
    Column("version_id", Integer, nullable=False),
    Column("last_updated", UTCDateTime, nullable=False),
    Column("deleted", Boolean, nullable=False, server_default=false()),
    Column("compartment_patient_id", RESOURCE_ID, nullable=True),
    Column("content", LargeBinary, nullable=False),
)
Index("ix_resource_compartment", resource.c.compartment_patient_id, resource.c.res_type)
Index("ix_resource_type_updated", resource.c.res_type, resource.c.last_updated)

resource_version = Table(
    "resource_version",
    metadata,
    # Global write order: history pages by it, so pages stay put while data is written.
    Column("seq", SEQUENCE, primary_key=True, autoincrement=True),
    Column("res_type", RESOURCE_TYPE, nullable=False),
    Column("res_id", RESOURCE_ID, nullable=False),
    Column("version_id", Integer, nullable=False),
    Column("last_updated", UTCDateTime, nullable=False),
    Column("method", String(8), nullable=False),
    Column("deleted", Boolean, nullable=False, server_default=false()),
    Column("compartment_patient_id", RESOURCE_ID, nullable=True),
    Column("content", LargeBinary, nullable=True),  # None for a deletion
    UniqueConstraint("res_type", "res_id", "version_id", name="uq_resource_version_identity"),
)
Index("ix_resource_version_type_seq", resource_version.c.res_type, resource_version.c.seq)
Index("ix_resource_version_last_updated", resource_version.c.last_updated)
Index("ix_resource_version_compartment", resource_version.c.compartment_patient_id)
