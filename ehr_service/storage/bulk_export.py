"""The SQL of FHIR Bulk Data export: jobs, and resources a page at a time."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, delete, func, insert, or_, select, update
from sqlalchemy.sql.elements import ColumnElement

from ehr_service.storage import citus
from ehr_service.storage.citus_sql import owned, unowned
from ehr_service.storage.tables import bulk_export_job, consent_refusal, resource

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
    """(id, stored content) of live resources of a type, in id order, changed in
    [since, until]; only patients' records (``compartment_only``), only these
    patients (``patients``), only those meeting one of the searches ``matching``
    (none: all), never the records of residents who refused the caller."""
    conditions: list[ColumnElement[bool]] = [
        resource.c.res_type == resource_type,
        resource.c.deleted.is_(False),
        resource.c.last_updated <= until,
    ]
    if after is not None:
        conditions.append(resource.c.res_id > after)
    if since is not None:
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
    found: dict[str, bytes] = {}
    for filtered in _statements(matching):  # merged in id order: the first ``limit``
        rows = conn.execute(
            select(resource.c.res_id, resource.c.content)
            .where(*conditions, *filtered)
            .order_by(resource.c.res_id)
            .limit(limit)
        ).all()
        found.update((r.res_id, bytes(r.content)) for r in rows)
    return sorted(found.items())[:limit]
