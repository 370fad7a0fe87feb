"""Run compiled searches: matching page, totals, includes and sort keys."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    and_,
    exists,
    false,
    func,
    literal,
    or_,
    select,
    tuple_,
)

from ehr_service.fhir.compartment import EVERYTHING, Visibility
from ehr_service.fhir.search.registry import SearchParameter
from ehr_service.storage import citus, claims
from ehr_service.storage.citus_sql import owned, same_record
from ehr_service.storage.search_sql import visible
from ehr_service.storage.tables import (
    resource,
    search_date,
    search_number,
    search_quantity,
    search_reference,
    search_string,
    search_token,
    search_uri,
    text_key,
)

_SORT_COLUMNS = {
    "string": (search_string, "value_norm", "value_norm"),
    "token": (search_token, "code", "code"),
    "date": (search_date, "low", "high"),
    "number": (search_number, "value", "value"),
    "quantity": (search_quantity, "value", "value"),
    "reference": (search_reference, "target_id", "target_id"),
    "uri": (search_uri, "value", "value"),
}


# Text sorts go by the first KEY_CHARS characters (ties by id): the sort value is
# carried in paging cursors, which a 10,000-character name must not make unbounded.
_TEXT_SORTS = frozenset({"string", "token", "reference", "uri"})


@dataclass(frozen=True, slots=True)
class Found:
    resource_type: str
    resource_id: str
    content: bytes
    sort_values: tuple[Any, ...] = ()
    owner: str | None = None  # compartment patient


@dataclass(frozen=True, slots=True)
class Position:
    """Where a page ends: the sort key values of a row, then its id (the tiebreak)."""

    sort_values: tuple[Any, ...]
    resource_id: str


def sort_key(
    parameter: SearchParameter, descending: bool, owners: Collection[str] | None = None
) -> Any:
    """The value a resource sorts by: its smallest (ascending) or largest value.
    ``owners``: the records the matches are pinned to; on the Citus layout they are
    named in the subquery too, so that the whole search stays on their shards."""
    if parameter.code == "_id":
        return resource.c.res_id
    if parameter.code == "_lastUpdated":
        return resource.c.last_updated
    table, low, high = _SORT_COLUMNS[parameter.type]
    column = table.c[high if descending else low]
    if parameter.type in _TEXT_SORTS:  # by the indexed key: a cursor stays bounded
        column = text_key(column)
    aggregate = func.max(column) if descending else func.min(column)
    return (
        select(aggregate)
        .where(
            *same_record(table, resource),
            *(
                [table.c.compartment_patient_id.in_(sorted(owners))]
                if owners and citus.active()
                else []
            ),
            table.c.res_type == resource.c.res_type,
            table.c.res_id == resource.c.res_id,
            table.c.param.in_(parameter.stored_as),
        )
        .scalar_subquery()
    )


def page(
    conn: Connection,
    where: Sequence[ColumnElement[bool]],
    order: Sequence[tuple[Any, bool]],
    *,
    limit: int,
    after: Position | None = None,
    before: Position | None = None,
) -> list[Found]:
    """One page of matches in (sort keys, id) order, keyset-paged: rows after
    ``after`` or, reading backwards, the rows just before ``before``. A keyset
    keeps pages correct while data is written (no offsets that shift)."""
    statement = page_statement(where, order, limit=limit, after=after, before=before)
    rows = conn.execute(statement).all()
    found = [
        Found(
            r.res_type,
            r.res_id,
            bytes(r.content),
            tuple(r[3 + i] for i in range(len(order))),
            citus.owner_of(r.compartment_patient_id),
        )
        for r in rows
    ]
    if before is not None:
        found.reverse()
    return found


def page_statement(
    where: Sequence[ColumnElement[bool]],
    order: Sequence[tuple[Any, bool]],
    *,
    limit: int,
    after: Position | None = None,
    before: Position | None = None,
) -> Select[Any]:
    keys = [key.label(f"sort_{i}") for i, (key, _) in enumerate(order)]
    statement = select(
        resource.c.res_type,
        resource.c.res_id,
        resource.c.content,
        *keys,
        resource.c.compartment_patient_id,
    )
    statement = statement.where(*where)
    if after is not None:
        statement = statement.where(_beyond(order, after, forward=True))
    if before is not None:
        statement = statement.where(_beyond(order, before, forward=False))
    backwards = before is not None
    clauses = []
    for key, descending in order:
        if descending != backwards:
            clauses.append(key.desc().nulls_first() if backwards else key.desc().nulls_last())
        else:
            clauses.append(key.asc().nulls_first() if backwards else key.asc().nulls_last())
    clauses.append(resource.c.res_id.desc() if backwards else resource.c.res_id.asc())
    return statement.order_by(*clauses).limit(limit)


def _beyond(
    order: Sequence[tuple[Any, bool]], position: Position, *, forward: bool
) -> ColumnElement[bool]:
    """Rows after (``forward``) or before ``position`` in (keys NULLS LAST, id) order."""
    alternatives: list[ColumnElement[bool]] = []
    equal_so_far: list[ColumnElement[bool]] = []
    for (key, descending), value in zip(order, position.sort_values, strict=True):
        if value is None:
            # NULLs sort last: nothing but NULLs follows; every non-NULL precedes.
            step = false() if forward else key.is_not(None)
            equal = key.is_(None)
        else:
            greater = key < value if descending else key > value
            smaller = key > value if descending else key < value
            step = or_(greater, key.is_(None)) if forward else smaller
            equal = key == value
        alternatives.append(and_(*equal_so_far, step))
        equal_so_far.append(equal)
    tiebreak = (
        resource.c.res_id > position.resource_id
        if forward
        else resource.c.res_id < position.resource_id
    )
    alternatives.append(and_(*equal_so_far, tiebreak))
    return or_(*alternatives)


def count(conn: Connection, where: Sequence[ColumnElement[bool]]) -> int:
    statement = select(func.count()).select_from(resource).where(*where)
    return int(conn.execute(statement).scalar_one())


def _by_type(table: Any, identities: Iterable[tuple[str, str]]) -> ColumnElement[bool]:
    """``(type, id) IN (...)`` as ORed per-type ``res_id IN`` lists: SQLite does not
    use an index for row-value IN lists, but does for these."""
    grouped: dict[str, list[str]] = {}
    for resource_type, resource_id in identities:
        grouped.setdefault(resource_type, []).append(resource_id)
    return or_(
        *(and_(table.c.res_type == t, table.c.res_id.in_(ids)) for t, ids in grouped.items())
    )


def read_many(
    conn: Connection, identities: Iterable[tuple[str, str]], view: Visibility = EVERYTHING
) -> list[Found]:
    """Live resources by (type, id) that ``view`` may see, in no particular order."""
    wanted = list(dict.fromkeys(identities))
    found: list[Found] = []
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        conditions = [_by_type(resource, chunk), resource.c.deleted == false()]
        if citus.active():  # the claims say which records (shards) hold them
            owners = claims.owners(conn, chunk)
            if not owners:
                continue
            conditions.append(resource.c.compartment_patient_id.in_(sorted(set(owners.values()))))
        if view.restricts:
            conditions.append(visible(resource, view))
        rows = conn.execute(
            select(
                resource.c.res_type,
                resource.c.res_id,
                resource.c.content,
                resource.c.compartment_patient_id,
            ).where(*conditions)
        ).all()
        found.extend(
            Found(
                r.res_type, r.res_id, bytes(r.content), (), citus.owner_of(r.compartment_patient_id)
            )
            for r in rows
        )
    return found


def _in_records(ref: Any, owners: Iterable[str | None] | None) -> list[ColumnElement[bool]]:
    """On the Citus layout, the reference rows' records when the caller knows them
    (an include then reads those shards only)."""
    if owners is None or not citus.active():
        return []
    keys = sorted({str(citus.owner_key(o)) for o in owners})
    return [ref.c.compartment_patient_id.in_(keys)]


def referenced(
    conn: Connection,
    source_type: str,
    source_ids: Sequence[str],
    param: str | None,
    target_type: str | None,
    owners: Iterable[str | None] | None = None,
) -> list[tuple[str, str]]:
    """(type, id) of resources that ``source_ids`` refer to through ``param`` (any if
    None); ``owners``: the sources' records, if known."""
    ref = search_reference
    conditions = [
        ref.c.res_type == source_type,
        ref.c.res_id.in_(source_ids),
        ref.c.target_id.is_not(None),
        *_in_records(ref, owners),
    ]
    if param is not None:
        conditions.append(ref.c.param == param)
    if target_type is not None:
        conditions.append(ref.c.target_type == target_type)
    rows = conn.execute(select(ref.c.target_type, ref.c.target_id).where(*conditions)).all()
    return [(r.target_type, r.target_id) for r in rows]


def referring_statement(
    source_type: str,
    param: str,
    target_type: str,
    target_ids: Sequence[str],
    owners: Iterable[str | None] | None = None,
) -> Select[Any]:
    ref = search_reference
    return (
        select(ref.c.res_id)
        .where(
            ref.c.res_type == source_type,
            ref.c.param == param,
            ref.c.target_type == target_type,
            ref.c.target_id.is_not(None),  # lets the partial target index serve
            ref.c.target_id.in_(target_ids),
            *_in_records(ref, owners),
        )
        .distinct()
    )


def referring(
    conn: Connection,
    source_type: str,
    param: str,
    target_type: str,
    target_ids: Sequence[str],
    owners: Iterable[str | None] | None = None,
) -> list[tuple[str, str]]:
    """(type, id) of ``source_type`` resources that refer to the targets through
    ``param``; ``owners``: the records the sources must be in, if known."""
    statement = referring_statement(source_type, param, target_type, target_ids, owners)
    return [(source_type, r.res_id) for r in conn.execute(statement).all()]


def _compartment_conditions(
    patient_id: str | None,
    types: Sequence[str] | None,
    since: Any,
    view: Visibility = EVERYTHING,
) -> list[ColumnElement[bool]]:
    conditions = [resource.c.deleted == false()]
    if view.restricts:
        conditions.append(visible(resource, view))
    if patient_id is not None:
        conditions.append(resource.c.compartment_patient_id == patient_id)
    else:
        conditions.append(owned(resource.c.compartment_patient_id))
    if types:
        conditions.append(resource.c.res_type.in_(types))
    if since is not None:
        conditions.append(resource.c.last_updated >= since)
    return conditions


def compartment_page(
    conn: Connection,
    patient_id: str | None,
    *,
    types: Sequence[str] | None,
    since: Any,
    after: tuple[str, str] | None,
    limit: int,
    view: Visibility = EVERYTHING,
) -> list[Found]:
    """Live resources of one patient's compartment (or of every patient's, for None),
    keyset-paged on (type, id) so that a lifelong record streams page by page."""
    conditions = _compartment_conditions(patient_id, types, since, view)
    if after is not None:
        conditions.append(tuple_(resource.c.res_type, resource.c.res_id) > after)
    rows = conn.execute(
        select(
            resource.c.res_type,
            resource.c.res_id,
            resource.c.content,
            resource.c.compartment_patient_id,
        )
        .where(*conditions)
        .order_by(resource.c.res_type, resource.c.res_id)
        .limit(limit)
    ).all()
    return [
        Found(r.res_type, r.res_id, bytes(r.content), (), citus.owner_of(r.compartment_patient_id))
        for r in rows
    ]


def compartment_count(
    conn: Connection,
    patient_id: str | None,
    types: Sequence[str] | None,
    since: Any,
    view: Visibility = EVERYTHING,
) -> int:
    conditions = _compartment_conditions(patient_id, types, since, view)
    return int(
        conn.execute(select(func.count()).select_from(resource).where(*conditions)).scalar_one()
    )


def references_from(
    conn: Connection,
    identities: Sequence[tuple[str, str]],
    owners: Collection[str | None] | None = None,
) -> list[tuple[str, str]]:
    """(type, id) of every resource the given resources refer to (``owners``: the
    records they are in, named on the Citus layout so only their shards are read)."""
    if not identities:
        return []
    ref = search_reference
    records = []
    if owners is not None and citus.active():
        records = [ref.c.compartment_patient_id.in_(sorted({citus.owner_key(o) for o in owners}))]
    rows = conn.execute(
        select(ref.c.target_type, ref.c.target_id)
        .where(
            *records,
            _by_type(ref, identities),
            ref.c.target_id.is_not(None),
            ref.c.target_type.is_not(None),
        )
        .distinct()
    ).all()
    return [(r.target_type, r.target_id) for r in rows]


def referenced_before(
    conn: Connection,
    patient_id: str | None,
    candidates: Sequence[tuple[str, str]],
    *,
    before: tuple[str, str] | None,
    types: Sequence[str] | None,
    since: Any,
    view: Visibility = EVERYTHING,
) -> set[tuple[str, str]]:
    """Which ``candidates`` a resource of the compartment selection up to ``before``
    (the keyset of compartment_page, inclusive) already refers to: those were on an
    earlier page of ``$everything``. Driven by the references to the candidates
    (few), not by the record (possibly thousands of resources)."""
    if before is None or not candidates:
        return set()
    ref = search_reference
    grouped: dict[str, list[str]] = {}
    for target_type, target_id in candidates:
        grouped.setdefault(target_type, []).append(target_id)
    referrer = [
        *_compartment_conditions(patient_id, types, since, view),
        *same_record(resource, ref),
        resource.c.res_type == ref.c.res_type,
        resource.c.res_id == ref.c.res_id,
    ]
    rows = conn.execute(
        select(ref.c.target_type, ref.c.target_id)
        .where(
            or_(
                *(
                    and_(
                        ref.c.target_type == t,
                        ref.c.target_id.is_not(None),
                        ref.c.target_id.in_(ids),
                    )
                    for t, ids in grouped.items()
                )
            ),
            ref.c.compartment_patient_id == patient_id
            if patient_id is not None
            else owned(ref.c.compartment_patient_id),
            tuple_(ref.c.res_type, ref.c.res_id) <= before,
            exists(select(literal(1)).where(*referrer)),
        )
        .distinct()
    ).all()
    return {(r.target_type, r.target_id) for r in rows}
