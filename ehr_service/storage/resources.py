"""Resource repository: the SQL of read, vread, write and history.

Functions take an open :class:`~sqlalchemy.Connection`; the caller's unit of
work (:class:`~ehr_service.storage.database.Database`) commits. Writes insert
into ``resource`` and ``resource_version`` together; bulk creates go through one
``executemany`` per table (docs/architecture.md §4: Core, not ORM objects).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    and_,
    bindparam,
    exists,
    false,
    func,
    insert,
    literal,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from ehr_service.fhir.compartment import EVERYTHING, Visibility
from ehr_service.fhir.errors import Issue
from ehr_service.fhir.search.values import IndexRows
from ehr_service.storage import citus, claims
from ehr_service.storage import exchange as exchange_store
from ehr_service.storage.bulk import bulk_insert
from ehr_service.storage.consent import replace_refusals
from ehr_service.storage.identity import IdNumberClaim, hold_id_number
from ehr_service.storage.partitioning import is_partitioned
from ehr_service.storage.search_index import delete_index, insert_index
from ehr_service.storage.search_sql import text_equals, visible
from ehr_service.storage.tables import consent_refusal, resource, resource_version, search_uri
from ehr_service.storage.unit_of_work import savepoint


@dataclass(frozen=True, slots=True)
class StoredVersion:
    """One version of a resource as stored."""

    resource_type: str
    resource_id: str
    version_id: int
    last_updated: datetime
    deleted: bool
    content: bytes | None
    compartment_patient_id: str | None = None
    method: str = "PUT"
    seq: int | None = None
    refused: bool = False  # its resident refused one of the actors asked about


@dataclass(frozen=True, slots=True)
class NewVersion:
    """A version about to be written (content already validated and serialised)."""

    resource_type: str
    resource_id: str
    version_id: int
    last_updated: datetime
    method: str  # POST, PUT, PATCH, DELETE
    compartment_patient_id: str | None
    content: bytes | None  # None for a deletion
    index: IndexRows | None = None  # search index rows of this version (None: none)
    id_number: str | None = None  # a Patient's own resident ID number, as its blind token
    id_number_claims: tuple[IdNumberClaim, ...] = ()  # its uniqueness claims, per scheme
    # A Consent's (patient, refused actors), kept in step in consent_refusal.
    consent: tuple[str | None, tuple[str, ...]] | None = None
    warnings: tuple[Issue, ...] = ()  # accepted, but worth telling the client
    outbox: tuple[str, ...] = ()  # partners this version is queued for (docs/architecture.md §8)

    def version_row(self) -> dict[str, Any]:
        return {
            "res_type": self.resource_type,
            "res_id": self.resource_id,
            "version_id": self.version_id,
            "last_updated": self.last_updated,
            "method": self.method,
            "deleted": self.content is None,
            "compartment_patient_id": citus.owner_key(self.compartment_patient_id),
            "content": self.content,
        }

    def current_row(self) -> dict[str, Any]:
        return {
            "res_type": self.resource_type,
            "res_id": self.resource_id,
            "version_id": self.version_id,
            "last_updated": self.last_updated,
            "deleted": self.content is None,
            "compartment_patient_id": citus.owner_key(self.compartment_patient_id),
            "content": self.content if self.content is not None else b"",
        }


def _bytes(value: Any) -> bytes | None:
    if value is None:
        return None
    return bytes(value)


def _current(row: Any) -> StoredVersion:
    return StoredVersion(
        row.res_type,
        row.res_id,
        row.version_id,
        row.last_updated,
        row.deleted,
        _bytes(row.content),
        citus.owner_of(row.compartment_patient_id),
    )


def _version(row: Any) -> StoredVersion:
    return StoredVersion(
        row.res_type,
        row.res_id,
        row.version_id,
        row.last_updated,
        row.deleted,
        _bytes(row.content),
        citus.owner_of(row.compartment_patient_id),
        row.method,
        row.seq,
    )


_CURRENT_COLUMNS = (
    resource.c.res_type,
    resource.c.res_id,
    resource.c.version_id,
    resource.c.last_updated,
    resource.c.deleted,
    resource.c.content,
    resource.c.compartment_patient_id,
)


_CURRENT_NAMES = (
    "res_type",
    "res_id",
    "version_id",
    "last_updated",
    "deleted",
    "compartment_patient_id",
    "content",
)
_VERSION_NAMES = (
    "res_type",
    "res_id",
    "version_id",
    "last_updated",
    "method",
    "deleted",
    "compartment_patient_id",
    "content",
)


def _hold_consent(conn: Connection, version: NewVersion) -> None:
    if version.resource_type == "Consent":
        patient, actors = version.consent or (None, ())
        replace_refusals(conn, version.resource_id, patient, actors if version.content else ())


def _queue(conn: Connection, versions: Sequence[NewVersion]) -> None:
    """Outbox rows for the partners a version is shared with, in its transaction."""
    rows = [
        {
            "partner_id": partner,
            "res_type": v.resource_type,
            "res_id": v.resource_id,
            "version_id": v.version_id,
            "patient_id": v.compartment_patient_id,
            "created": v.last_updated,
            "state": "pending",
            "attempts": 0,
            "next_attempt": v.last_updated,
        }
        for v in versions
        if v.compartment_patient_id is not None
        for partner in v.outbox
    ]
    exchange_store.enqueue(conn, rows)


def _hold_identity(conn: Connection, version: NewVersion, *, new: bool = False) -> None:
    """Keep the unique resident ID number of a Patient in step with its current
    version (a deleted Patient frees its number for a corrected record)."""
    if version.resource_type != "Patient" or (new and version.id_number is None):
        return
    claims = version.id_number_claims if version.id_number is not None else ()
    if version.id_number is not None and not claims:  # a number must never go unclaimed
        raise ValueError("an ID number without its uniqueness claims")
    hold_id_number(conn, version.resource_id, claims, new=new)


def live_contents(conn: Connection, resource_type: str, ids: Sequence[str]) -> dict[str, bytes]:
    """Current content of the live resources among these ids of one type."""
    if not ids:
        return {}
    rows = conn.execute(
        select(resource.c.res_id, resource.c.content).where(
            resource.c.res_type == resource_type,
            resource.c.res_id.in_(list(ids)),
            resource.c.deleted == false(),
        )
    ).all()
    return {r.res_id: bytes(r.content) for r in rows}


def read_current(
    conn: Connection,
    resource_type: str,
    resource_id: str,
    *,
    for_update: bool = False,
    refused_actors: Sequence[str] = (),
) -> StoredVersion | None:
    """The current version, deleted or not; with ``for_update`` the row is locked
    until the transaction ends (PostgreSQL; SQLite's write lock already covers it).
    With ``refused_actors``, the same statement says whether its resident refused
    any of them (``StoredVersion.refused``): a read is one round trip."""
    lock = for_update and conn.dialect.name == "postgresql"
    params: dict[str, Any] = {"r_type": resource_type, "r_id": resource_id}
    if refused_actors:
        params["r_actors"] = list(refused_actors)
    owned = citus.active()
    if owned:  # the claim says which record (shard) holds it: one single-shard read
        params["r_owner"] = claims.owner(conn, resource_type, resource_id)
        if params["r_owner"] is None:
            return None
    row = conn.execute(_current_statement(lock, bool(refused_actors), owned), params).first()
    if row is None:
        return None
    stored = _current(row)
    return replace(stored, refused=bool(row.refused)) if refused_actors else stored


@cache
def _current_statement(lock: bool, consent: bool, owned: bool = False) -> Any:
    """The read of a current version, built once (the hottest statement: SQLAlchemy
    then neither rebuilds it nor recomputes its cache key per call)."""
    columns: list[Any] = list(_CURRENT_COLUMNS)
    if consent:
        # On Citus the record is named in the subquery too: its shard is then known.
        record = bindparam("r_owner") if owned else resource.c.compartment_patient_id
        columns.append(
            exists()
            .where(
                consent_refusal.c.patient_id == record,
                consent_refusal.c.actor.in_(bindparam("r_actors", expanding=True)),
            )
            .label("refused")
        )
    query = select(*columns).where(
        resource.c.res_type == bindparam("r_type"), resource.c.res_id == bindparam("r_id")
    )
    if owned:
        query = query.where(resource.c.compartment_patient_id == bindparam("r_owner"))
    return query.with_for_update(of=resource) if lock else query


def read_version(
    conn: Connection, resource_type: str, resource_id: str, version_id: int
) -> StoredVersion | None:
    statement = select(resource_version).where(
        resource_version.c.res_type == resource_type,
        resource_version.c.res_id == resource_id,
        resource_version.c.version_id == version_id,
    )
    if citus.active():
        owner = claims.owner(conn, resource_type, resource_id)
        if owner is None:
            return None
        statement = statement.where(resource_version.c.compartment_patient_id == owner)
    row = conn.execute(statement).first()
    return None if row is None else _version(row)


def existing(conn: Connection, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which of these (type, id) are stored (deleted ones too: their ids are taken)."""
    if citus.active():
        return set(claims.owners(conn, keys))
    found: set[tuple[str, str]] = set()
    by_type: dict[str, list[str]] = {}
    for resource_type, resource_id in keys:
        by_type.setdefault(resource_type, []).append(resource_id)
    for resource_type, ids in by_type.items():
        rows = conn.execute(
            select(resource.c.res_id).where(
                resource.c.res_type == resource_type, resource.c.res_id.in_(ids)
            )
        ).all()
        found.update((resource_type, r.res_id) for r in rows)
    return found


def insert_new(conn: Connection, versions: Sequence[NewVersion]) -> None:
    """Insert first versions of resources that do not exist yet (server ids)."""
    if not versions:
        return
    current = [v.current_row() for v in versions]
    if citus.active():
        claims.take(
            conn, [(r["res_type"], r["res_id"], r["compartment_patient_id"]) for r in current]
        )
    bulk_insert(
        conn, resource, _CURRENT_NAMES, [tuple(r[c] for c in _CURRENT_NAMES) for r in current]
    )
    history_rows = [v.version_row() for v in versions]
    bulk_insert(
        conn,
        resource_version,
        _VERSION_NAMES,
        [tuple(r[c] for c in _VERSION_NAMES) for r in history_rows],
    )
    insert_index(
        conn,
        [
            (v.resource_type, v.resource_id, v.compartment_patient_id, v.index)
            for v in versions
            if v.index is not None
        ],
    )
    for v in versions:
        _hold_identity(conn, v, new=True)
        _hold_consent(conn, v)
    _queue(conn, versions)


def insert_if_absent(conn: Connection, version: NewVersion) -> bool:
    """Insert a first version under a client-chosen id; False if the id is taken
    (a concurrent update-as-create won the race)."""
    dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    statement = (
        dialect_insert(resource)
        .values(**version.current_row())
        .on_conflict_do_nothing()  # the logical id, (with the patient, when partitioned)
        .returning(resource.c.res_id)
    )
    if citus.active():
        row = version.current_row()
        if not claims.take_if_free(
            conn, row["res_type"], row["res_id"], row["compartment_patient_id"]
        ):
            return False
        inserted = conn.execute(statement).first()
    elif is_partitioned(conn):
        try:  # the id taken in another record's partition: its claim is the conflict
            with savepoint(conn):
                inserted = conn.execute(statement).first()
        except IntegrityError:
            return False
    else:
        inserted = conn.execute(statement).first()
    if inserted is None:
        return False
    conn.execute(insert(resource_version).values(**version.version_row()))
    _hold_identity(conn, version, new=True)
    _hold_consent(conn, version)
    _queue(conn, [version])
    if version.index is not None:
        insert_index(
            conn,
            [
                (
                    version.resource_type,
                    version.resource_id,
                    version.compartment_patient_id,
                    version.index,
                )
            ],
        )
    return True


def replace_current(conn: Connection, version: NewVersion, expected_version_id: int) -> bool:
    """Write the next version if the current one is still ``expected_version_id``."""
    values = version.current_row()
    if version.content is None:
        values.pop("content")  # the current row of a deleted resource keeps its last content
    owner: str | None = None
    if citus.active():  # on the record's shard; a move to another record is delete + insert
        written, owner = claims.write_current(
            conn, version.resource_type, version.resource_id, values, version.current_row(),
            expected_version_id,
        )  # fmt: skip
        if not written:
            return False
    else:
        result = conn.execute(
            update(resource)
            .where(
                and_(
                    resource.c.res_type == version.resource_type,
                    resource.c.res_id == version.resource_id,
                    resource.c.version_id == expected_version_id,
                )
            )
            .values(**values)
        )
        if result.rowcount != 1:
            return False
    conn.execute(insert(resource_version).values(**version.version_row()))
    _hold_identity(conn, version)
    _hold_consent(conn, version)
    _queue(conn, [version])
    delete_index(conn, version.resource_type, version.resource_id, owner)
    if version.index is not None:
        insert_index(
            conn,
            [
                (
                    version.resource_type,
                    version.resource_id,
                    version.compartment_patient_id,
                    version.index,
                )
            ],
        )
    return True


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    resource_type: str | None = None
    resource_id: str | None = None
    since: datetime | None = None
    before_seq: int | None = None  # next pages: older than this
    after_seq: int | None = None  # previous pages: newer than this
    limit: int = 50
    view: Visibility = EVERYTHING  # what the caller may see


def _history_conditions(query: HistoryQuery) -> list[ColumnElement[bool]]:
    rv = resource_version
    conditions: list[ColumnElement[bool]] = []
    if query.resource_type is not None:
        conditions.append(rv.c.res_type == query.resource_type)
    if query.resource_id is not None:
        conditions.append(rv.c.res_id == query.resource_id)
    if query.since is not None:
        conditions.append(rv.c.last_updated >= query.since)
    if query.view.restricts:
        conditions.append(visible(rv, query.view, query.resource_type))
    return conditions


def _history_page(conn: Connection, seq: int, *, older: bool) -> ColumnElement[bool]:
    """Versions after the version ``seq`` in history order. One node writes: the
    global write order, seq. On the Citus layout every node's sequence hands out its
    own range, so the order is (lastUpdated, seq), and the cursor's version places
    it there (a seq of no version: the versions before or after it by seq alone)."""
    rv = resource_version
    if citus.active():
        mark = conn.execute(select(rv.c.last_updated).where(rv.c.seq == seq)).scalar()
        if mark is not None:
            key, at = tuple_(rv.c.last_updated, rv.c.seq), tuple_(literal(mark), literal(seq))
            return key < at if older else key > at
    return rv.c.seq < seq if older else rv.c.seq > seq


def history(conn: Connection, query: HistoryQuery) -> list[StoredVersion]:
    """Versions newest first, keyset-paged on the write order (``_history_page``)."""
    rv = resource_version
    conditions = _history_conditions(query)
    if query.before_seq is not None:
        conditions.append(_history_page(conn, query.before_seq, older=True))
    if query.after_seq is not None:
        conditions.append(_history_page(conn, query.after_seq, older=False))
    ascending = query.after_seq is not None and query.before_seq is None
    order = [rv.c.last_updated, rv.c.seq] if citus.active() else [rv.c.seq]
    statement = select(rv).where(*conditions)
    statement = statement.order_by(*(c.asc() if ascending else c.desc() for c in order))
    versions = [_version(row) for row in conn.execute(statement.limit(query.limit)).all()]
    if ascending:
        versions.reverse()
    return versions


def count_history(conn: Connection, query: HistoryQuery) -> int:
    statement = select(func.count()).select_from(resource_version)
    statement = statement.where(*_history_conditions(query))
    return int(conn.execute(statement).scalar_one())


def count_resources(conn: Connection, resource_type: str | None = None) -> int:
    query = select(func.count()).select_from(resource)
    if resource_type is not None:
        query = query.where(resource.c.res_type == resource_type)
    return int(conn.execute(query).scalar_one())


def live_batch(
    conn: Connection, resource_type: str | None, after: tuple[str, str] | None, limit: int
) -> list[tuple[str, str, str | None, bytes]]:
    """(type, id, compartment patient, content) of live resources, keyset-ordered."""
    conditions = [resource.c.deleted == false()]
    if resource_type is not None:
        conditions.append(resource.c.res_type == resource_type)
    if after is not None:
        conditions.append(tuple_(resource.c.res_type, resource.c.res_id) > after)
    rows = conn.execute(
        select(
            resource.c.res_type,
            resource.c.res_id,
            resource.c.compartment_patient_id,
            resource.c.content,
        )
        .where(*conditions)
        .order_by(resource.c.res_type, resource.c.res_id)
        .limit(limit)
    ).all()
    return [(r.res_type, r.res_id, r.compartment_patient_id, bytes(r.content)) for r in rows]


def live_by_url(conn: Connection, resource_type: str, url: str) -> list[tuple[str, bytes]]:
    """(id, content) of the live resources of a type whose canonical ``url`` it is."""
    rows = conn.execute(
        select(resource.c.res_id, resource.c.content).where(
            resource.c.res_type == resource_type,
            resource.c.deleted == false(),
            resource.c.res_id.in_(
                select(search_uri.c.res_id).where(
                    search_uri.c.res_type == resource_type,
                    search_uri.c.param == "url",
                    text_equals(search_uri.c.value, url),
                )
            ),
        )
    ).all()
    return [(r.res_id, bytes(r.content)) for r in rows]
