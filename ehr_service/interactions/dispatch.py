"""Run a routed interaction on an open connection (bundle entries use this)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from ehr_service.fhir.errors import Category, FhirError
from ehr_service.fhir.operations import load_operation_definitions
from ehr_service.fhir.primitives import format_instant, utc_now
from ehr_service.interactions import (
    audit_events,
    conditional,
    create,
    delete,
    history,
    operation_definitions,
    patch,
    read,
    search,
    update,
)
from ehr_service.interactions.capability import capability_statement
from ehr_service.interactions.context import RequestContext
from ehr_service.interactions.results import Result
from ehr_service.interactions.routing import Interaction, Route


def capabilities(ctx: RequestContext) -> Result:
    settings = ctx.services.settings
    statement = capability_statement(
        settings,
        ctx.services.registry,
        load_operation_definitions(settings.profiles_dir),
        ctx.base_url,
        format_instant(utc_now())[:10],
    )
    return Result(200, statement)


def run(
    conn: Connection,
    ctx: RequestContext,
    target: Route,
    body: Any = None,
    if_match: int | None = None,
    if_none_match: int | None = None,
) -> Result:
    kind, rtype, rid = target.interaction, target.resource_type, target.resource_id
    scoped = RequestContext(
        ctx.services,
        ctx.base_url,
        ctx.request_id,
        ctx.caller,
        ctx.prefer_return,
        target.query or {},
    )
    if kind is Interaction.CAPABILITIES:
        return capabilities(ctx)
    if kind is Interaction.HISTORY_SYSTEM:
        return history.history(conn, scoped)
    assert rtype is not None
    if rtype in audit_events.READ_ONLY_TYPES:
        definitions = rtype == operation_definitions.TYPE
        if kind is Interaction.SEARCH_TYPE:
            if definitions:
                return operation_definitions.search(scoped)
            return audit_events.search(conn, scoped)
        if kind is Interaction.READ and rid is not None:
            if definitions:
                return operation_definitions.read(ctx, rid)
            return audit_events.read(conn, ctx, rid)
        raise audit_events.read_only(rtype, target.method, f"/{rtype}" + (f"/{rid}" if rid else ""))
    if kind is Interaction.CREATE:
        return create.create(conn, ctx, rtype, body)
    if kind is Interaction.HISTORY_TYPE:
        return history.history(conn, scoped, rtype)
    if kind is Interaction.SEARCH_TYPE:
        return search.search(conn, scoped, rtype)
    if kind is Interaction.CONDITIONAL:
        criteria = target.query or {}
        if target.method == "PUT":
            return conditional.conditional_update(conn, ctx, rtype, body, criteria, if_match)
        if target.method == "PATCH":
            return conditional.conditional_patch(conn, ctx, rtype, body, criteria, if_match)
        return conditional.conditional_delete(conn, ctx, rtype, criteria)
    assert rid is not None
    if kind is Interaction.READ:
        return read.read(conn, scoped, rtype, rid, if_none_match)
    if kind is Interaction.VREAD:
        assert target.version_id is not None
        return read.vread(conn, scoped, rtype, rid, target.version_id)
    if kind is Interaction.UPDATE:
        return update.update(conn, ctx, rtype, rid, body, if_match)
    if kind is Interaction.PATCH:
        return patch.patch(conn, ctx, rtype, rid, body, if_match)
    if kind is Interaction.DELETE:
        return delete.delete(conn, ctx, rtype, rid, if_match)
    if kind is Interaction.HISTORY_INSTANCE:
        return history.history(conn, scoped, rtype, rid)
    raise FhirError.of(
        Category.NOT_IMPLEMENTED, f"{kind.value} is not supported yet", code="not-supported"
    )
