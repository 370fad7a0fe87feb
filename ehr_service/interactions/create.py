"""create (R4 §3.1.0.5): the server assigns the id; a client id is ignored."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from ehr_service.fhir.primitives import new_id, utc_now
from ehr_service.interactions.context import RequestContext
from ehr_service.interactions.results import Result
from ehr_service.interactions.writing import prepare_version
from ehr_service.security.policy import require
from ehr_service.storage import resources
from ehr_service.storage.resources import NewVersion


def prepare_create(
    conn: Connection,
    ctx: RequestContext,
    resource_type: str,
    body: Any,
    resource_id: str | None = None,
    *,
    now: datetime | None = None,
    validated: bool = False,
) -> NewVersion:
    """``now``: the transaction's moment (one for all its resources);
    ``validated``: checked ahead of the transaction (``WritePipeline.validate_ahead``)."""
    require(ctx.caller, resource_type, "c")
    version, _ = prepare_version(
        conn,
        ctx,
        body,
        resource_type=resource_type,
        resource_id=resource_id or new_id(),
        version_id=1,
        now=now or utc_now(),
        method="POST",
        validated=validated,
    )
    return version


def created(version: NewVersion) -> Result:
    return Result(
        201,
        version.content,
        version.resource_type,
        version.resource_id,
        version.version_id,
        version.last_updated,
        location=f"{version.resource_type}/{version.resource_id}/_history/{version.version_id}",
        message=f"Created {version.resource_type}/{version.resource_id}",
        warnings=version.warnings,
        patients=Result.owners(version.compartment_patient_id),
    )


def create(conn: Connection, ctx: RequestContext, resource_type: str, body: Any) -> Result:
    version = prepare_create(conn, ctx, resource_type, body)
    resources.insert_new(conn, [version])
    return created(version)
