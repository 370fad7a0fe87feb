"""Tables of docs/architecture.md §4: current resources and their append-only versions.

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
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    func,
    literal_column,
)
from sqlalchemy.types import TypeDecorator

from ehr_service.storage.numbers import ExactNumber

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


# Search indexes (docs/architecture.md §4): one table per parameter type, rows for the
# current version of each resource, written in the same transaction.
def _index_table(name: str, *columns: Column[Any]) -> Table:
    return Table(
        name,
        metadata,
        Column("res_type", RESOURCE_TYPE, nullable=False),
        Column("res_id", RESOURCE_ID, nullable=False),
        Column("param", String(100), nullable=False),
        *columns,
        Column("compartment_patient_id", RESOURCE_ID, nullable=True),
    )


# Index text of any length (an identifier, a code, a URL): PostgreSQL cannot put a
# value over ~2.7 kB in a B-tree, so the indexes hold ``text_key(column)``, its first
# KEY_CHARS characters, and the search compiler compares the key, then the value.
TEXT = Text()
KEY_CHARS = 200
NUMBER = ExactNumber()  # numeric on PostgreSQL, an order-preserving key on SQLite


def text_key(column: Any) -> Any:
    """The indexed key of an index text column (migration 0010 builds the indexes)."""
    return func.substr(column, literal_column("1"), literal_column(str(KEY_CHARS)))


search_string = _index_table(
    "search_string",
    Column("value_norm", TEXT, nullable=False),
    Column("value_exact", TEXT, nullable=False),
)
search_token = _index_table(
    "search_token",
    Column("system", TEXT),
    Column("code", TEXT),
    Column("text_norm", TEXT),
)
search_date = _index_table(
    "search_date",
    Column("low", UTCDateTime, nullable=False),
    Column("high", UTCDateTime, nullable=False),
)
search_reference = _index_table(
    "search_reference",
    Column("target_type", RESOURCE_TYPE),
    Column("target_id", RESOURCE_ID),
    Column("url", TEXT),
    Column("identifier_system", TEXT),
    Column("identifier_value", TEXT),
)
search_quantity = _index_table(
    "search_quantity",
    Column("value", NUMBER, nullable=False),
    Column("system", TEXT),
    Column("code", TEXT),
)
search_number = _index_table("search_number", Column("value", NUMBER, nullable=False))
search_uri = _index_table("search_uri", Column("value", TEXT, nullable=False))
search_composite = _index_table(
    "search_composite",
    Column("c1_system", TEXT),
    Column("c1_code", TEXT),
    Column("c2_system", TEXT),
    Column("c2_code", TEXT),
    Column("c2_value", NUMBER),
    Column("c2_low", UTCDateTime),
    Column("c2_high", UTCDateTime),
)
INDEX_TABLES = (
    search_string,
    search_token,
    search_date,
    search_reference,
    search_quantity,
    search_number,
    search_uri,
    search_composite,
)

for _table in INDEX_TABLES:
    Index(f"ix_{_table.name}_resource", _table.c.res_type, _table.c.res_id)
# varchar_pattern_ops: PostgreSQL uses the index for prefix LIKE in any collation.
Index(
    "ix_search_string_value",
    search_string.c.res_type,
    search_string.c.param,
    text_key(search_string.c.value_norm),  # text_pattern_ops on PostgreSQL: prefix LIKE
)
Index(
    "ix_search_token_code",
    search_token.c.res_type,
    search_token.c.param,
    text_key(search_token.c.code),
    text_key(search_token.c.system),
)
Index(
    "ix_search_date_range",
    search_date.c.res_type,
    search_date.c.param,
    search_date.c.low,
    search_date.c.high,
)
Index(
    "ix_search_reference_target",
    search_reference.c.target_type,
    search_reference.c.target_id,
    search_reference.c.res_type,
    search_reference.c.param,
    # Partial: most rows have only one of target / url / identifier, and every
    # index entry is work on the ingest path.
    postgresql_where=search_reference.c.target_id.is_not(None),
    sqlite_where=search_reference.c.target_id.is_not(None),
)
Index(
    "ix_search_reference_url",
    search_reference.c.res_type,
    search_reference.c.param,
    text_key(search_reference.c.url),
    postgresql_where=search_reference.c.url.is_not(None),
    sqlite_where=search_reference.c.url.is_not(None),
)
Index(
    "ix_search_reference_identifier",
    search_reference.c.res_type,
    search_reference.c.param,
    text_key(search_reference.c.identifier_value),
    postgresql_where=search_reference.c.identifier_value.is_not(None),
    sqlite_where=search_reference.c.identifier_value.is_not(None),
)
Index(
    "ix_search_quantity_value",
    search_quantity.c.res_type,
    search_quantity.c.param,
    text_key(search_quantity.c.code),
    search_quantity.c.value,
)
Index(
    "ix_search_number_value", search_number.c.res_type, search_number.c.param, search_number.c.value
)
Index(
    "ix_search_uri_value",
    search_uri.c.res_type,
    search_uri.c.param,
    text_key(search_uri.c.value),
)
Index(
    "ix_search_composite_code",
    search_composite.c.res_type,
    search_composite.c.param,
    text_key(search_composite.c.c1_code),
)

# Conditional create (If-None-Exist): one row per (type, normalised criteria) so that
# concurrent conditional creates of the same thing serialise on a unique constraint.
conditional_create_key = Table(
    "conditional_create_key",
    metadata,
    Column("res_type", RESOURCE_TYPE, primary_key=True),
    Column("criteria", String(255), primary_key=True),
    Column("res_id", RESOURCE_ID, nullable=False),
)

# Resident identity (docs/architecture.md §6). One row per resident ID number, keyed by its
# blind token (never the number): the primary key is what makes a resident unique,
# whatever the concurrency. A global lookup table (not distributed by patient).
# A resident's uniqueness claim, one row per blind-index scheme (hmac-sha256, hmac-sm3):
# two Patients with one number collide on the token of a scheme both claim under.
resident_id_number = Table(
    "resident_id_number",
    metadata,
    Column("blind_index", String(64), primary_key=True),
    Column("patient_id", RESOURCE_ID, nullable=False),
    Column("scheme", String(16), nullable=False, server_default="hmac-sha256"),
    UniqueConstraint("scheme", "patient_id", name="uq_resident_id_number_scheme_patient"),
)

# Lifelong record numbers: allocated once per Patient, never reused (SQLite
# AUTOINCREMENT and a PostgreSQL identity sequence both never hand a number out twice).
record_number = Table(
    "record_number",
    metadata,
    Column("number", SEQUENCE, primary_key=True, autoincrement=True),
    Column("patient_id", RESOURCE_ID, nullable=False),
    UniqueConstraint("patient_id", name="uq_record_number_patient_id"),
    sqlite_autoincrement=True,
)

# National health-record numbers (WS 365, docs/architecture.md §6): one per Patient, unique
# by their primary key; ``health_record_sequence`` holds the last sequence handed out
# per 12-digit division, taken by an upsert (concurrent writers of the same division
# queue on its row, writers of other divisions do not).
health_record_number = Table(
    "health_record_number",
    metadata,
    Column("number", String(17), primary_key=True),
    Column("patient_id", RESOURCE_ID, nullable=False),
    UniqueConstraint("patient_id", name="uq_health_record_number_patient_id"),
)
health_record_sequence = Table(
    "health_record_sequence",
    metadata,
    Column("area", String(12), primary_key=True),
    Column("last", Integer, nullable=False),
)

# Audit (docs/architecture.md §9): append-only, hash-chained, sealed in signed blocks. An event
# is inserted by its own transaction with an id (``seq``: the AuditEvent's id) from
# a sequence and no hash, so no row is locked by every request; the sealer chains
# committed events in order (``position``, ``prev_hash``, ``hash``) into blocks
# (``audit_block``) whose Merkle root it signs. ``audit_head`` holds the sealed
# chain's last position, hash and block (locked by the sealer only) and, on SQLite,
# the last id handed out; ``audit_access`` says whose record each event touched
# (for "who accessed my record").
audit_event = Table(
    "audit_event",
    metadata,
    Column("seq", SEQUENCE, primary_key=True, autoincrement=False),
    Column("recorded", UTCDateTime, nullable=False),
    Column("kind", String(128), nullable=False),
    Column("outcome", String(4), nullable=False),
    Column("subject", String(255), nullable=False),
    Column("organization", String(255), nullable=True),
    Column("entity", TEXT, nullable=True),  # Type/id acted on (AuditEvent?entity=)
    Column("content", LargeBinary, nullable=False),
    Column("position", SEQUENCE, nullable=True),  # on the chain, once sealed
    Column("block", SEQUENCE, nullable=True),
    Column("prev_hash", String(64), nullable=True),
    Column("hash", String(64), nullable=True),
)
Index("uq_audit_event_position", audit_event.c.position, unique=True)
Index(
    "ix_audit_event_unsealed",
    audit_event.c.seq,
    postgresql_where=audit_event.c.position.is_(None),
    sqlite_where=audit_event.c.position.is_(None),
)
audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", SEQUENCE, nullable=False),  # the last sealed position
    Column("hash", String(64), nullable=False),
    Column("allocated", SEQUENCE, nullable=False, server_default="0"),
    Column("block", SEQUENCE, nullable=False, server_default="0"),
    Column("legacy", SEQUENCE, nullable=False, server_default="0"),  # pre-block events end
)
audit_block = Table(
    "audit_block",
    metadata,
    Column("number", SEQUENCE, primary_key=True, autoincrement=False),
    Column("first_position", SEQUENCE, nullable=False),
    Column("last_position", SEQUENCE, nullable=False),
    Column("root", String(64), nullable=False),
    Column("head", String(64), nullable=False),
    Column("sealed", UTCDateTime, nullable=False),
    Column("kid", String(128), nullable=False),
    Column("statement", LargeBinary, nullable=False),
    Column("signature", TEXT, nullable=False),
    UniqueConstraint("first_position", name="uq_audit_block_first"),
)
audit_access = Table(
    "audit_access",
    metadata,
    Column("patient_id", RESOURCE_ID, primary_key=True),
    Column("seq", SEQUENCE, primary_key=True),
)
# Archived segments (docs/architecture.md §9, "Retention"): runs of whole signed blocks
# moved out of ``audit_event`` into a file whose digest and signed statement stay
# here. ``first_seq``/``last_seq`` bound the ids in it, to find an event's file.
audit_segment = Table(
    "audit_segment",
    metadata,
    Column("number", SEQUENCE, primary_key=True, autoincrement=False),
    Column("first_block", SEQUENCE, nullable=False),
    Column("last_block", SEQUENCE, nullable=False),
    Column("first_position", SEQUENCE, nullable=False),
    Column("last_position", SEQUENCE, nullable=False),
    Column("first_seq", SEQUENCE, nullable=False),
    Column("last_seq", SEQUENCE, nullable=False),
    Column("events", SEQUENCE, nullable=False),
    Column("last_recorded", UTCDateTime, nullable=False),
    Column("file", String(255), nullable=False),
    Column("digest", String(64), nullable=False),  # SHA-256 of the file's bytes
    Column("bytes", SEQUENCE, nullable=False),
    Column("archived", UTCDateTime, nullable=False),
    Column("kid", String(128), nullable=False),
    Column("statement", LargeBinary, nullable=False),  # the signed JSON
    Column("signature", TEXT, nullable=False),  # compact JWS over it
    UniqueConstraint("first_block", name="uq_audit_segment_first_block"),
)

# E-health cards (migration 0017): the card's blind index binds it to one resident;
# the card ID itself is kept sealed, never in plaintext.
health_card = Table(
    "health_card",
    metadata,
    Column("card_blind", String(64), primary_key=True),
    Column("patient_id", RESOURCE_ID, nullable=False),
    Column("card_sealed", TEXT, nullable=False),
    Column("bound_at", UTCDateTime, nullable=False),
)
Index("ix_health_card_patient", health_card.c.patient_id)

# Consent refusals (docs/architecture.md §9), derived from active Consent resources when they
# are written: whose record may not be shown to which organisation or region.
consent_refusal = Table(
    "consent_refusal",
    metadata,
    Column("consent_id", RESOURCE_ID, primary_key=True),
    Column("actor", String(255), primary_key=True),  # Organization/<id>, region:<code> or *
    Column("patient_id", RESOURCE_ID, nullable=False),
)
Index("ix_consent_refusal_patient", consent_refusal.c.patient_id, consent_refusal.c.actor)

# Exchange partners (docs/architecture.md §8): a reference table, not distributed by patient.
exchange_partner = Table(
    "exchange_partner",
    metadata,
    Column("partner_id", String(64), primary_key=True),
    Column("name", String(255), nullable=False),
    Column("region", String(64), nullable=False),
    Column("audience", String(255), nullable=False),  # the aud their messages to us carry
    Column("endpoint", String(512), nullable=True),  # where we push to them
    Column("jwks_url", String(512), nullable=True),
    Column("jwks", LargeBinary, nullable=False),  # pinned public keys (JSON)
    Column("allowed_types", String(2048), nullable=False),  # JSON list of resource types
    Column("updated", UTCDateTime, nullable=False),
    Column("feed_cursor", SEQUENCE, nullable=False, server_default="0"),  # pulled up to here
    # the cryptographic suite it signs with and accepts: international | national | both
    Column("suite", String(16), nullable=False, server_default="international"),
)

# Signed exchanges (docs/architecture.md §8). Every message received (and every one sent) is
# kept with its exact bytes, sealed at rest (they carry resident ID numbers), and its
# signature, so it can be verified again years later. The primary key on (issuer,
# jti) is the replay protection.
exchange_message = Table(
    "exchange_message",
    metadata,
    Column("issuer", String(255), primary_key=True),
    Column("jti", String(255), primary_key=True),
    Column("direction", String(8), nullable=False),  # in | out | feed
    Column("partner_id", String(64), nullable=False),
    Column("kid", String(255), nullable=False),
    Column("alg", String(16), nullable=False),
    Column("issued", UTCDateTime, nullable=False),
    Column("recorded", UTCDateTime, nullable=False),
    Column("body_sha256", String(64), nullable=False),
    Column("body", LargeBinary, nullable=False),  # sealed exact bytes
    Column("signature", String(8192), nullable=False),
    Column("status", Integer, nullable=False),
    Column("response", LargeBinary, nullable=True),  # what the receiver answered
    Column("response_signature", String(8192), nullable=True),
    Index("ix_exchange_message_partner_recorded", "partner_id", "recorded"),
)

# Results waiting for (or done with) delivery to a partner, written in the
# transaction that stores them.
exchange_outbox = Table(
    "exchange_outbox",
    metadata,
    Column("seq", SEQUENCE, primary_key=True, autoincrement=True),
    Column("partner_id", String(64), nullable=False),
    Column("res_type", RESOURCE_TYPE, nullable=False),
    Column("res_id", RESOURCE_ID, nullable=False),
    Column("version_id", Integer, nullable=False),
    Column("patient_id", RESOURCE_ID, nullable=False),
    Column("created", UTCDateTime, nullable=False),
    Column("state", String(8), nullable=False),  # pending | sent | dead
    Column("attempts", Integer, nullable=False),
    Column("next_attempt", UTCDateTime, nullable=False),
    Column("last_error", String(1024), nullable=True),
    Column("message_jti", String(255), nullable=True),
    # PostgreSQL: the writing transaction, so the feed never passes one still open
    # (it pages in (txid, seq) order: storage.exchange.feed_rows).
    Column("txid", BigInteger, nullable=True),
    UniqueConstraint("partner_id", "res_type", "res_id", "version_id"),
    Index("ix_exchange_outbox_due", "partner_id", "state", "next_attempt"),
    Index("ix_exchange_outbox_feed", "partner_id", "seq"),
    Index("ix_exchange_outbox_feed_settled", "partner_id", "txid", "seq"),
)

# Mutual recognition of results (docs/architecture.md §7): the catalogue editions (one active),
# their items and code maps, and the facts behind the statistics.
recognition_edition = Table(
    "recognition_edition",
    metadata,
    Column("edition", String(32), primary_key=True),
    Column("url", String(255), nullable=False),
    Column("items", Integer, nullable=False),
    Column("loaded", UTCDateTime, nullable=False),
    Column("active", Boolean, nullable=False),
)
recognition_item = Table(
    "recognition_item",
    metadata,
    Column("edition", String(32), primary_key=True),
    Column("code", String(64), primary_key=True),
    Column("category", String(16), nullable=False),  # laboratory | imaging
    Column("name_zh", String(255), nullable=False),
    Column("name_en", String(255), nullable=False),
    Column("loinc", String(32), nullable=True),
    Column("modality", String(16), nullable=True),
    Column("body_site", String(32), nullable=True),
    Column("validity_days", Integer, nullable=False),
    Column("qc_category", String(64), nullable=False),
    Column("price", Float, nullable=False),
)
recognition_code_map = Table(
    "recognition_code_map",
    metadata,
    Column("edition", String(32), primary_key=True),
    Column("system", String(255), primary_key=True),
    Column("code", String(128), primary_key=True),
    Column("item", String(64), nullable=False),
)
recognition_service_item = Table(  # national medical-service price item -> items (1:n)
    "recognition_service_item",
    metadata,
    Column("edition", String(32), primary_key=True),
    Column("code", String(32), primary_key=True),
    Column("item", String(64), primary_key=True),
)
recognition_fact = Table(
    "recognition_fact",
    metadata,
    Column("seq", SEQUENCE, primary_key=True, autoincrement=True),
    Column("recorded", UTCDateTime, nullable=False),
    Column("kind", String(16), nullable=False),  # offered | accepted | retest
    Column("patient_id", RESOURCE_ID, nullable=False),
    Column("item", String(64), nullable=False),
    Column("institution", String(255), nullable=True),  # of the result offered or reused
    Column("region", String(64), nullable=True),
    Column("reason", String(64), nullable=True),  # of a re-test
    Column("price", Float, nullable=False),
    # One offer per resident, item, result and day; one decision per order and item.
    Column("dedupe_key", String(512), nullable=True, unique=True),
    Index("ix_recognition_fact_recorded", "recorded"),
)

# FHIR Bulk Data export jobs (kick-off, status, files under the data directory).
bulk_export_job = Table(
    "bulk_export_job",
    metadata,
    Column("job_id", String(64), primary_key=True),
    Column("client", String(255), nullable=False),  # who may poll and download
    Column("kind", String(16), nullable=False),  # system | patient | group
    Column("group_id", RESOURCE_ID, nullable=True),
    Column("types", String(8192), nullable=False),  # JSON list
    Column("since", UTCDateTime, nullable=True),
    Column("request", String(2048), nullable=False),
    Column("state", String(16), nullable=False),  # queued | running | done | failed | cancelled
    Column("progress", String(255), nullable=True),
    Column("created", UTCDateTime, nullable=False),
    Column("transaction_time", UTCDateTime, nullable=False),
    Column("finished", UTCDateTime, nullable=True),
    Column("output", LargeBinary, nullable=True),  # JSON list of {type, file, count}
    Column("error", String(2048), nullable=True),
)

# CDS Hooks cards issued at ordering (docs/architecture.md §7): what each card offered,
# so the feedback on it records the doctor's decision once.
cds_card = Table(
    "cds_card",
    metadata,
    Column("card_id", String(36), primary_key=True),  # the card's uuid
    Column("service", String(64), nullable=False),  # the CDS service that issued it
    Column("hook_instance", String(64), nullable=False),
    Column("client", String(255), nullable=False),  # who was given it: only they answer
    Column("issued", UTCDateTime, nullable=False),
    Column("patient_id", RESOURCE_ID, nullable=False),
    Column("item", String(64), nullable=False),
    Column("result_ref", String(255), nullable=False),  # the recognisable prior result
    Column("order_ref", String(255), nullable=True),  # the draft order, as the client names it
    Column("institution", String(255), nullable=True),
    Column("region", String(64), nullable=True),
    Column("suggestions", String(4096), nullable=False),  # JSON {suggestion uuid: decision}
    Column("outcome", String(16), nullable=True),  # accepted | overridden, once fed back
    Column("decision", String(128), nullable=True),  # accepted | retest[:reason]
    Column("answered", UTCDateTime, nullable=True),
    Index("ix_cds_card_issued", "issued"),
)
