"""The SQL of resident identity: unique ID numbers (by blind token), record numbers,
and the lookups of matching and merging."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    LargeBinary,
    and_,
    delete,
    false,
    func,
    literal,
    or_,
    select,
    tuple_,
    union,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError

from ehr_service.fhir.errors import Category, FhirError
from ehr_service.storage import citus
from ehr_service.storage.search_sql import text_equals
from ehr_service.storage.tables import (
    resident_id_number,
    resource,
    resource_version,
    search_date,
    search_reference,
    search_string,
    search_token,
)
from ehr_service.storage.unit_of_work import UnitOfWork


def _insert(conn: Connection) -> type[postgresql.Insert] | type[sqlite.Insert]:
    return postgresql.Insert if conn.dialect.name == "postgresql" else sqlite.Insert


@dataclass(frozen=True, slots=True)
class IdNumberClaim:
    """One uniqueness claim of a Patient's ID number: its blind token under a scheme.
    ``always``: claimed in any case; else only while claims of that scheme remain
    (a deployment that has left the scheme behind)."""

    scheme: str
    token: str
    always: bool = True


def _scheme_in_use(conn: Connection, scheme: str) -> bool:
    table = resident_id_number
    row = conn.execute(select(table.c.patient_id).where(table.c.scheme == scheme).limit(1))
    return row.first() is not None


def hold_id_number(
    conn: Connection,
    patient_id: str,
    claims: Sequence[IdNumberClaim],
    *,
    new: bool = False,
) -> None:
    """Make ``claims`` (the blind tokens of one number, a token per scheme) the ID
    number of ``patient_id``; none: it has none.

    The primary key on the blind token decides races: a concurrent holder of any
    token claimed makes this a 409, on PostgreSQL after that transaction commits.
    """
    table = resident_id_number
    wanted = [c for c in claims if c.always or _scheme_in_use(conn, c.scheme)]
    stale = table.c.patient_id == patient_id
    if wanted:
        stale = and_(stale, table.c.blind_index.not_in([c.token for c in wanted]))
    if not new:
        conn.execute(delete(table).where(stale))
    for claim in wanted:
        inserted = conn.execute(
            _insert(conn)(table)
            .values(blind_index=claim.token, patient_id=patient_id, scheme=claim.scheme)
            .on_conflict_do_nothing()
            .returning(table.c.patient_id)
        ).first()
        if inserted is not None:
            continue
        holder = conn.execute(
            select(table.c.patient_id).where(table.c.blind_index == claim.token)
        ).scalar_one_or_none()
        if holder == patient_id:
            continue
        raise FhirError.of(
            Category.CONFLICT,
            "Another Patient already holds this resident ID number: one record per resident "
            "(find it with identifier=<system>|<number>, then update or merge)",
            code="duplicate",
            expression=["Patient.identifier"],
        )


def drop_claims_of_scheme(conn: Connection, scheme: str, replaced_by: str) -> int:
    """Drop the ``scheme`` claims of Patients that also claim under ``replaced_by``
    (a deployment that left ``scheme``); how many."""
    table, other = resident_id_number, resident_id_number.alias("other")
    covered = (
        select(other.c.patient_id)
        .where(other.c.scheme == replaced_by, other.c.patient_id == table.c.patient_id)
        .exists()
    )
    result = conn.execute(delete(table).where(table.c.scheme == scheme, covered))
    return int(result.rowcount or 0)


def holds_id_numbers(unit: UnitOfWork) -> bool:
    """Does the database hold any resident ID number (False before migrations)?"""
    try:
        with unit.read() as conn:
            row = conn.execute(select(resident_id_number.c.patient_id).limit(1)).first()
    except DBAPIError:  # not migrated yet: nothing to protect
        return False
    return row is not None


def id_number_holder(conn: Connection, tokens: tuple[str, ...]) -> str | None:
    """The Patient holding any of these blind tokens (of one number, several schemes)."""
    return conn.execute(
        select(resident_id_number.c.patient_id)
        .where(resident_id_number.c.blind_index.in_(list(tokens)))
        .limit(1)
    ).scalar_one_or_none()


def holds_number(conn: Connection, patient_id: str) -> bool:
    """Does this record hold a resident ID number?"""
    row = conn.execute(
        select(resident_id_number.c.blind_index)
        .where(resident_id_number.c.patient_id == patient_id)
        .limit(1)
    ).first()
    return row is not None


def match_candidates(
    conn: Connection,
    *,
    birth_range: tuple[datetime, datetime] | None,
    phones: Iterable[str],
    names: Iterable[str],
    limit: int,
) -> list[str]:
    """Ids of live Patients sharing a birth date, a phone number or a name (blocking)."""
    queries = []
    if birth_range is not None:
        low, high = birth_range
        queries.append(
            select(search_date.c.res_id).where(
                search_date.c.res_type == "Patient",
                search_date.c.param == "birthdate",
                search_date.c.low == low,
                search_date.c.high == high,
            )
        )
    phone_list = [p for p in phones if p]
    if phone_list:
        queries.append(
            select(search_token.c.res_id).where(
                search_token.c.res_type == "Patient",
                search_token.c.param == "phone",
                or_(*(text_equals(search_token.c.code, p) for p in phone_list)),
            )
        )
    name_list = [n for n in names if n]
    if name_list:
        queries.append(
            select(search_string.c.res_id).where(
                search_string.c.res_type == "Patient",
                search_string.c.param == "name",
                or_(*(text_equals(search_string.c.value_norm, n) for n in name_list)),
            )
        )
    if not queries:
        return []
    ids = union(*queries).subquery()
    rows = conn.execute(
        select(resource.c.res_id)
        .where(
            resource.c.res_type == "Patient",
            resource.c.deleted == false(),
            resource.c.res_id.in_(select(ids.c.res_id)),
        )
        .limit(limit)
    ).all()
    return [r.res_id for r in rows]


def patient_record_members(conn: Connection, patient_id: str) -> list[tuple[str, str]]:
    """(type, id) of live resources owned by the patient or referring to it."""
    owned = select(resource.c.res_type, resource.c.res_id).where(
        resource.c.compartment_patient_id == patient_id, resource.c.deleted == false()
    )
    referring = select(search_reference.c.res_type, search_reference.c.res_id).where(
        search_reference.c.target_type == "Patient", search_reference.c.target_id == patient_id
    )
    rows = conn.execute(union(owned, referring)).all()
    return sorted(
        (r.res_type, r.res_id)
        for r in rows
        if not (r.res_type == "Patient" and r.res_id == patient_id)
    )


def known_identifier_system(conn: Connection, system: str) -> bool:
    """Does any Patient carry an identifier of ``system``?"""
    row = conn.execute(
        select(search_token.c.res_id)
        .where(
            search_token.c.res_type == "Patient",
            search_token.c.param == "identifier",
            text_equals(search_token.c.system, system),
        )
        .limit(1)
    ).first()
    return row is not None


def sealed_batch(
    conn: Connection, marker: bytes, after: tuple[str, ...] | None, limit: int, *, versions: bool
) -> list[tuple[tuple[str, ...], bytes]]:
    """(key, content) of stored rows holding ``marker``, keyset-paged: current rows
    keyed by (type, id), history rows by their sequence number."""
    key_columns: tuple[Any, ...]
    if versions:
        table = resource_version
        key_columns = (resource_version.c.seq,)
    elif citus.active():  # keyed by record too: each row is then locked on its shard
        table = resource
        key_columns = (resource.c.compartment_patient_id, resource.c.res_type, resource.c.res_id)
    else:
        table = resource
        key_columns = (resource.c.res_type, resource.c.res_id)
    if conn.dialect.name == "postgresql":
        holds = func.position(literal(marker, LargeBinary).op("IN")(table.c.content)) > 0
    else:
        holds = func.instr(table.c.content, literal(marker, LargeBinary)) > 0
    query = select(*key_columns, table.c.content).where(table.c.content.is_not(None), holds)
    if after is not None:
        typed: tuple[Any, ...] = (int(after[0]),) if versions else after
        query = query.where(tuple_(*key_columns) > typed)
    query = query.order_by(*key_columns).limit(limit)
    if not versions and citus.active():
        return _locked_one_by_one(conn, conn.execute(query).all())
    if not versions and conn.dialect.name == "postgresql":
        query = query.with_for_update()  # a concurrent update waits, and is not undone
    rows = conn.execute(query).all()
    return [(tuple(str(v) for v in row[:-1]), bytes(row[-1])) for row in rows]


def _locked_one_by_one(
    conn: Connection, rows: Sequence[Any]
) -> list[tuple[tuple[str, ...], bytes]]:
    """Citus locks rows of one shard per statement: each found row is locked and
    read again on its record's shard (what a concurrent writer left is resealed)."""
    held: list[tuple[tuple[str, ...], bytes]] = []
    for owner, resource_type, resource_id, _ in rows:
        content = conn.execute(
            select(resource.c.content)
            .where(
                resource.c.compartment_patient_id == owner,
                resource.c.res_type == resource_type,
                resource.c.res_id == resource_id,
            )
            .with_for_update()
        ).scalar()
        if content is not None:
            held.append(((owner, resource_type, resource_id), bytes(content)))
    return held


def replace_sealed(
    conn: Connection, key: tuple[str, ...], content: bytes, *, versions: bool
) -> None:
    if versions:
        conn.execute(
            update(resource_version)
            .where(resource_version.c.seq == int(key[0]))
            .values(content=content)
        )
    elif len(key) == 3:  # (record, type, id): the Citus layout
        conn.execute(
            update(resource)
            .where(
                resource.c.compartment_patient_id == key[0],
                resource.c.res_type == key[1],
                resource.c.res_id == key[2],
            )
            .values(content=content)
        )
    else:
        conn.execute(
            update(resource)
            .where(resource.c.res_type == key[0], resource.c.res_id == key[1])
            .values(content=content)
        )


def retoken(conn: Connection, resource_type: str, resource_id: str, tokens: dict[str, str]) -> int:
    """Index rows of one resource holding an old blind token (key) given the new one
    (value): a blind-index scheme change. How many rows changed."""
    changed = 0
    for old, new in tokens.items():
        result = conn.execute(
            update(search_token)
            .where(
                search_token.c.res_type == resource_type,
                search_token.c.res_id == resource_id,
                search_token.c.code == old,
            )
            .values(code=new)
        )
        changed += int(result.rowcount or 0)
    return changed
