"""Conditional interactions (R4 §3.1.0.5.1, §3.1.0.4.3, §3.1.0.6.1) and conditional
references in transactions (§3.1.0.11.2): the criteria are a search, run inside
the write transaction; zero, one or several matches decide what happens.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from sqlalchemy import Connection

from ehr_service.fhir.errors import Category, FhirError
from ehr_service.fhir.primitives import new_id
from ehr_service.fhir.search.query import RESULT_PARAMETERS
from ehr_service.interactions import create, delete, patch, update
from ehr_service.interactions.context import RequestContext, search_parser
from ehr_service.interactions.read import current_or_fail
from ehr_service.interactions.results import Result
from ehr_service.security.policy import require, require_search
from ehr_service.storage import conditional_keys, resources, search_queries
from ehr_service.storage.search_sql import SearchCompiler

Criteria = str | dict[str, list[str]]


def parse_criteria(criteria: Criteria) -> dict[str, list[str]]:
    """Criteria as a query string (``identifier=a|b``) or already parsed."""
    query = (
        criteria
        if isinstance(criteria, dict)
        else parse_qs(criteria.lstrip("?"), keep_blank_values=True)
    )
    if not query or any(name in RESULT_PARAMETERS for name in query):
        raise FhirError.of(
            Category.INCORRECT, "Conditional criteria must be search parameters", code="invalid"
        )
    return query


def matching_ids(
    conn: Connection,
    ctx: RequestContext,
    resource_type: str,
    query: dict[str, list[str]],
    limit: int = 2,
) -> list[str]:
    """Ids of live resources matching the criteria (at most ``limit``) that the
    caller may see."""
    require(ctx.caller, resource_type, "s")
    request = search_parser(ctx).parse(resource_type, query)
    require_search(ctx.caller, request.touched_types())
    if request.unknown or request.result:
        names = ", ".join(request.unknown or list(request.result))
        raise FhirError.of(
            Category.INCORRECT,
            f"Conditional criteria use parameters this server cannot apply: {names}",
            code="not-supported",
        )
    where = SearchCompiler(ctx.base_url, ctx.services.compartment).where(
        resource_type, request.criteria, request.reverse_chains, view=ctx.view
    )
    return [f.resource_id for f in search_queries.page(conn, where, [], limit=limit)]


def _normalised(ctx: RequestContext, query: dict[str, list[str]]) -> str:
    """The criteria as a key: a keyed digest, since criteria may hold an ID number."""
    text = "&".join(f"{k}={v}" for k in sorted(query) for v in sorted(query[k]))
    return ctx.services.identity.protection.keyed_digest(text)


def _several(resource_type: str) -> FhirError:
    return FhirError.of(
        Category.PRECONDITION_FAILED,
        f"The criteria match more than one {resource_type}",
        code="multiple-matches",
    )


def existing_result(conn: Connection, resource_type: str, resource_id: str) -> Result:
    stored = current_or_fail(conn, resource_type, resource_id)
    return Result(
        200,
        stored.content,
        resource_type,
        resource_id,
        stored.version_id,
        stored.last_updated,
        location=f"{resource_type}/{resource_id}/_history/{stored.version_id}",
    )


def existing_match(
    conn: Connection, ctx: RequestContext, resource_type: str, criteria: Criteria
) -> str | None:
    """The one resource the criteria find, None for none; several is a 412."""
    found = matching_ids(conn, ctx, resource_type, parse_criteria(criteria))
    if len(found) > 1:
        raise _several(resource_type)
    return found[0] if found else None


def claim_or_match(
    conn: Connection,
    ctx: RequestContext,
    resource_type: str,
    criteria: Criteria,
    resource_id: str,
) -> str | None:
    """The one resource the criteria find, or None once this transaction holds the
    criteria's key for ``resource_id``, which it must then create. A concurrent
    creator of a match holds the key until it ends (PostgreSQL waits on it), so
    a loser sees the winner's resource and is given its id instead: whatever
    references a transaction points at it, the resource exists."""
    query = parse_criteria(criteria)
    match = existing_match(conn, ctx, resource_type, query)
    if match is not None:
        return match
    key = _normalised(ctx, query)
    if conditional_keys.claim(conn, resource_type, key, resource_id):
        return None
    match = existing_match(conn, ctx, resource_type, query)  # the holder has committed
    if match is not None:
        return match
    conditional_keys.release(conn, resource_type, key)  # stale: its resource changed
    if not conditional_keys.claim(conn, resource_type, key, resource_id):
        raise FhirError.of(
            Category.CONFLICT,
            "A concurrent conditional create is under way; retry",
            code="conflict",
        )
    return None


def conditional_create(
    conn: Connection,
    ctx: RequestContext,
    resource_type: str,
    body: Any,
    criteria: Criteria,
) -> Result:
    """If-None-Exist: none creates, one returns it (200), several is 412."""
    new_resource_id = new_id()
    match = claim_or_match(conn, ctx, resource_type, criteria, new_resource_id)
    if match is not None:
        return existing_result(conn, resource_type, match)
    # Prepared only once the key is ours: nothing (a record number) is spent on a loser.
    return _create(conn, ctx, resource_type, body, new_resource_id)


def _create(
    conn: Connection, ctx: RequestContext, resource_type: str, body: Any, resource_id: str
) -> Result:
    version = create.prepare_create(conn, ctx, resource_type, body, resource_id)
    resources.insert_new(conn, [version])
    return create.created(version)


def conditional_update(
    conn: Connection,
    ctx: RequestContext,
    resource_type: str,
    body: Any,
    criteria: Criteria,
    if_match: int | None = None,
) -> Result:
    query = parse_criteria(criteria)
    found = matching_ids(conn, ctx, resource_type, query)
    if len(found) > 1:
        raise _several(resource_type)
    body_id = body.get("id") if isinstance(body, dict) else None
    if found:
        if body_id is not None and body_id != found[0]:
            raise FhirError.of(
                Category.INCORRECT,
                "The resource id differs from the resource the criteria found",
                code="invalid",
                expression=["id"],
            )
        return update.update(conn, ctx, resource_type, found[0], {**body, "id": found[0]}, if_match)
    if isinstance(body_id, str):
        return update.update(conn, ctx, resource_type, body_id, body, if_match)
    # No match: create under the criteria's key, as a conditional create does, so
    # that concurrent conditional updates make one resource and update it.
    require(ctx.caller, resource_type, "c")
    new_resource_id = new_id()
    match = claim_or_match(conn, ctx, resource_type, query, new_resource_id)
    if match is not None:
        return update.update(conn, ctx, resource_type, match, {**body, "id": match}, if_match)
    return _create(conn, ctx, resource_type, body, new_resource_id)


def conditional_delete(
    conn: Connection, ctx: RequestContext, resource_type: str, criteria: Criteria
) -> Result:
    found = matching_ids(conn, ctx, resource_type, parse_criteria(criteria))
    if len(found) > 1:
        raise _several(resource_type)
    if not found:
        return Result(204, None, message=f"No {resource_type} matched; nothing deleted")
    return delete.delete(conn, ctx, resource_type, found[0])


def conditional_patch(
    conn: Connection,
    ctx: RequestContext,
    resource_type: str,
    document: Any,
    criteria: Criteria,
    if_match: int | None = None,
) -> Result:
    found = matching_ids(conn, ctx, resource_type, parse_criteria(criteria))
    if len(found) > 1:
        raise _several(resource_type)
    if not found:
        raise FhirError.of(Category.NOT_FOUND, f"No {resource_type} matches the criteria")
    return patch.patch(conn, ctx, resource_type, found[0], document, if_match)


def resolve_reference(conn: Connection, ctx: RequestContext, reference: str) -> str:
    """``Patient?identifier=sys|val`` -> ``Patient/<id>`` (exactly one match, else 412/404)."""
    resource_type, _, criteria = reference.partition("?")
    found = matching_ids(conn, ctx, resource_type, parse_criteria(criteria))
    if len(found) > 1:
        raise _several(resource_type)
    if not found:
        raise FhirError.of(
            Category.NOT_FOUND, f"The conditional reference '{reference[:100]}' matches nothing"
        )
    return f"{resource_type}/{found[0]}"
