"""AuditEvent read and search (R4 §3.1.0.2, §3.1.1): the service's own
hash-chained events, read-only (see :mod:`ehr_service.audit.search`)."""

from __future__ import annotations

from sqlalchemy import Connection

from ehr_service.audit import proofs
from ehr_service.audit import search as audit_search
from ehr_service.fhir.errors import Category, FhirError
from ehr_service.interactions.context import RequestContext
from ehr_service.interactions.results import Result
from ehr_service.pipeline.core import READ_ONLY_TYPES, read_only
from ehr_service.security.policy import require_audit_reader

__all__ = ["READ_ONLY_TYPES", "read", "read_only", "search"]
from ehr_service.storage import audit as audit_store
from ehr_service.storage.audit import EventQuery


def search(conn: Connection, ctx: RequestContext) -> Result:
    require_audit_reader(ctx.caller)
    settings = ctx.settings
    request = audit_search.parse(
        ctx.query, default_count=settings.default_page_size, max_count=settings.max_page_size
    )
    events = audit_store.search_events(
        conn,
        request.query,
        before=request.before,
        after=request.after,
        limit=request.count + 1,
    )
    more = len(events) > request.count
    if more:
        events = events[1:] if request.after is not None else events[: request.count]
    body = audit_search.bundle(events, request, ctx.query, ctx.base_url, more)
    return Result(200, body)


def _seq(event_id: str) -> int:
    return int(event_id) if event_id.isascii() and event_id.isdigit() and len(event_id) < 19 else 0


def read(conn: Connection, ctx: RequestContext, event_id: str) -> Result:
    require_audit_reader(ctx.caller)
    seq = _seq(event_id)
    found = audit_store.search_events(
        conn, EventQuery(ids=((seq,),)), before=None, after=None, limit=1
    )
    if not found:
        raise FhirError.of(Category.NOT_FOUND, f"AuditEvent/{event_id[:64]} is not known")
    return Result(200, found[0].content, "AuditEvent", str(seq), 1, found[0].recorded)


def inclusion_proof(conn: Connection, ctx: RequestContext, event_id: str) -> Result:
    """``AuditEvent/{id}/$inclusion-proof``: the event, its block's signed
    statement and its Merkle path (``audit.proofs``); 404 until it is sealed."""
    require_audit_reader(ctx.caller)
    seq = _seq(event_id)
    archive = ctx.services.settings.effective_audit_archive_dir
    proof = proofs.inclusion_proof(conn, seq, archive) if seq else None
    if proof is None:
        raise FhirError.of(
            Category.NOT_FOUND,
            f"AuditEvent/{event_id[:64]} is not known or not sealed yet (blocks are sealed "
            "every few seconds)",
        )
    return Result(200, proof, "AuditEvent", str(seq))
