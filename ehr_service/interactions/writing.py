"""The write pipeline as interactions call it: one version of one resource,
prepared for the caller of the request (``ehr_service.pipeline``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from ehr_service.interactions.context import RequestContext
from ehr_service.storage.resources import NewVersion


def prepare_version(
    conn: Connection,
    ctx: RequestContext,
    resource: Any,
    *,
    resource_type: str,
    resource_id: str,
    version_id: int,
    now: datetime,
    method: str,
    previous: bytes | None = None,
    validated: bool = False,
) -> tuple[NewVersion, dict[str, Any]]:
    """Validate and serialise one version through the pipeline and its hooks; a 400
    lists every problem. ``previous`` is the stored content of the version this one
    follows; what is returned beside the version is its stored JSON."""
    return ctx.services.pipeline.prepare(
        conn,
        ctx.write_request,
        resource,
        resource_type=resource_type,
        resource_id=resource_id,
        version_id=version_id,
        now=now,
        method=method,
        previous=previous,
        validated=validated,
    )
