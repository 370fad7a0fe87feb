"""The SQL of FHIR Bulk Data export: jobs, and resources a page at a time."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, delete, func, insert, or_, select, update
from sqlalchemy.sql.elements import ColumnElement

from ehr_service.storage import citus
from ehr_service.storage.citus_sql import owned, unowned
from ehr_service.storage.tables import (
    bulk_export_job,
    consent_refusal,
    resource,
    resource_version,
)

# The conditions of one compiled search (``SearchCompiler.where``): a ``_typeFilter``.
FilterClauses = Sequence[ColumnElement[bool]]


def add_job(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(insert(bulk_export_job).values(**values))


def get_job(conn: Connection, job_id: str) -> dict[str, Any] | None:
    row = conn.execute(select(bulk_export_job).where(bulk_export_job.c.job_id == job_id)).first()
    return None if row is None else dict(row._mapping)


def set_job(conn: Connection, job_id: str, **values: Any) -> bool:
    """Change a job unless it was cancelled meanwhile."""
    result = conn.execute(
        update(bulk_export_job)
        .where(bulk_export_job.c.job_id == job_id, bulk_export_job.c.state != "cancelled")
        .values(**values)
    )
    return bool(result.rowcount)


def cancel_job(conn: Connection, job_id: str) -> None:
    conn.execute(
        update(bulk_export_job).where(bulk_export_job.c.job_id == job_id).values(state="cancelled")
    )


def remove_job(conn: Connection, job_id: str) -> None:
    conn.execute(delete(bulk_export_job).where(bulk_export_job.c.job_id == job_id))


def stale_jobs(conn: Connection) -> list[str]:
    rows = conn.execute(
        select(bulk_export_job.c.job_id).where(bulk_export_job.c.state.in_(["queued", "running"]))
    ).all()
    return [r.job_id for r in rows]


def finished_before(conn: Connection, before: datetime) -> list[str]:
    rows = conn.execute(
        select(bulk_export_job.c.job_id).where(
            bulk_export_job.c.state.in_(["done", "failed"]), bulk_export_job.c.finished < before
        )
    ).all()
    return [r.job_id for r in rows]


def _statements(matching: Sequence[FilterClauses]) -> list[list[ColumnElement[bool]]]:
    """The conditions of the statements that together find the resources meeting
    one of the searches: one statement with the searches ORed; on the Citus layout
    one statement per search, as Citus refuses correlated subqueries under OR."""
    if not matching:
        return [[]]
    if citus.active() and len(matching) > 1:
        return [[and_(*clauses)] for clauses in matching]
    return [[or_(*(and_(*clauses) for clauses in matching))]]


def matches_at_least(
    conn: Connection, resource_type: str, matching: Sequence[FilterClauses], count: int
) -> bool:
    """Do at least ``count`` live resources of the type meet one of the searches?
    (It stops counting there.)"""
    live = [resource.c.res_type == resource_type, resource.c.deleted.is_(False)]
    statements = _statements(matching)
    if len(statements) == 1:
        found = select(resource.c.res_id).where(*live, *statements[0])
        counted = select(func.count()).select_from(found.limit(count).subquery())
        return int(conn.execute(counted).scalar_one()) >= count
    ids: set[str] = set()
    for conditions in statements:
        query = select(resource.c.res_id).where(*live, *conditions).limit(count)
        ids.update(conn.execute(query).scalars())
        if len(ids) >= count:
            return True
    return False


def page(
    conn: Connection,
    resource_type: str,
    *,
    after: str | None,
    limit: int,
    since: datetime | None,
    until: datetime,
    patients: Sequence[str] | None,
    compartment_only: bool,
    refused_actors: Sequence[str],
    matching: Sequence[FilterClauses] = (),
) -> list[tuple[str, bytes]]:
    """(id, stored content) of the resources of a type as they were at ``until``
    (the kick-off's ``transactionTime``), in id order, changed in [since, until]:
    one changed or deleted since is exported as its version then (from the
    history), one created since not at all. Only patients' records
    (``compartment_only``), only these patients (``patients``), only those meeting
    one of the searches ``matching`` (none: all; judged on the current version,
    the one indexed), never the records of residents who refused the caller."""
    conditions: list[ColumnElement[bool]] = [
        resource.c.res_type == resource_type,
        # deleted now: it may have been there at the kick-off
        or_(resource.c.deleted.is_(False), resource.c.last_updated > until),
    ]
    if after is not None:
        conditions.append(resource.c.res_id > after)
    if since is not None:  # a version then is never newer than the current one
        conditions.append(resource.c.last_updated >= since)
    owner = resource.c.compartment_patient_id
    if patients is not None:
        conditions.append(owner.in_(list(patients)))
    elif compartment_only:
        conditions.append(owned(owner))
    if refused_actors:
        refused = select(consent_refusal.c.patient_id).where(
            consent_refusal.c.actor.in_(list(refused_actors))
        )
        conditions.append(or_(unowned(owner), and_(owned(owner), owner.not_in(refused))))
    found: dict[str, Any] = {}
    for filtered in _statements(matching):  # merged in id order: the first ``limit``
        rows = conn.execute(
            select(
                resource.c.res_id,
                resource.c.content,
                resource.c.last_updated,
                resource.c.compartment_patient_id,
            )
            .where(*conditions, *filtered)
            .order_by(resource.c.res_id)
            .limit(limit)
        ).all()
        found.update((r.res_id, r) for r in rows)
    first = sorted(found.items())[:limit]
    earlier = _as_of(conn, resource_type, [r for _, r in first if r.last_updated > until], until)
    out: list[tuple[str, bytes]] = []
    for resource_id, row in first:
        if row.last_updated <= until:
            changed, content = row.last_updated, bytes(row.content)
        elif resource_id in earlier:
            changed, content = earlier[resource_id]
        else:
            continue  # created since, or deleted then
        if since is None or changed >= since:
            out.append((resource_id, content))
    return out


def _as_of(
    conn: Connection, resource_type: str, rows: Sequence[Any], until: datetime
) -> dict[str, tuple[datetime, bytes]]:
    """id -> (lastUpdated, content) of each resource's last version up to ``until``,
    for those it was not deleted in."""
    if not rows:
        return {}
    rv = resource_version
    ids = [r.res_id for r in rows]
    records = sorted({r.compartment_patient_id for r in rows})
    mine = [rv.c.res_type == resource_type, rv.c.res_id.in_(ids), rv.c.last_updated <= until]
    keys = [rv.c.res_id]
    if citus.active():  # the versions are in the current rows' records, joined on them
        mine.append(rv.c.compartment_patient_id.in_(records))
        keys.insert(0, rv.c.compartment_patient_id)
    last = (
        select(*keys, func.max(rv.c.version_id).label("version_id"))
        .where(*mine)
        .group_by(*keys)
        .subquery()
    )
    joined = and_(rv.c.version_id == last.c.version_id, *(k == last.c[k.name] for k in keys))
    versions = conn.execute(
        select(rv.c.res_id, rv.c.last_updated, rv.c.content, rv.c.deleted)
        .join(last, joined)
        .where(*mine)
    ).all()
    return {
        v.res_id: (v.last_updated, bytes(v.content))
        for v in versions
        if not v.deleted and v.content is not None
    }
