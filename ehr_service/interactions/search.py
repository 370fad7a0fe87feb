"""search-type (R4 §3.1.1): GET and POST ``[type]/_search``.

Criteria are compiled to SQL over the index tables; results come back as a
``searchset`` Bundle with paging links, includes, totals and an
OperationOutcome entry for parameters this server ignored.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import Connection

from ehr_service.fhir import jsonio
from ehr_service.fhir.errors import Category, FhirError, Issue, operation_outcome
from ehr_service.fhir.json_types import decimal_in_range
from ehr_service.fhir.primitives import format_instant, new_id, utc_now
from ehr_service.fhir.search.includes import Include, parse_includes
from ehr_service.fhir.search.query import SearchParser, SearchRequest
from ehr_service.fhir.search.shaping import check_contained, requested_elements, subset
from ehr_service.interactions.context import RequestContext, search_parser
from ehr_service.interactions.paging import first_value, page_size
from ehr_service.interactions.results import Result
from ehr_service.security.policy import require, require_search
from ehr_service.storage import search_queries
from ehr_service.storage.search_queries import Found, Position
from ehr_service.storage.search_sql import SearchCompiler

SUMMARY_VALUES = {"true", "false", "text", "data", "count"}
TOTAL_VALUES = {"none", "estimate", "accurate"}


def _issue(message: str) -> Issue:
    return Issue(message, "not-supported", "warning")


def _sort(
    request: SearchRequest, parser: SearchParser, owners: set[str] | None = None
) -> list[tuple[Any, bool, type]]:
    """(SQL sort key, descending, Python type of its values) per ``_sort`` key
    (``owners``: the records the criteria pin the matches to, if any)."""
    order = []
    for raw in request.result.get("_sort", []):
        for key in raw.split(","):
            descending = key.startswith("-")
            code = key.lstrip("-")
            parameter = parser.parameter(request.resource_type, code)
            if parameter is None or parameter.type == "composite":
                raise FhirError.of(
                    Category.INCORRECT,
                    f"Cannot sort by '{code}'",
                    code="invalid",
                    expression=["_sort"],
                )
            kind = _SORT_VALUE_TYPES.get(parameter.type, str)
            if parameter.code == "_lastUpdated":
                kind = datetime
            key = search_queries.sort_key(parameter, descending, owners)
            order.append((key, descending, kind))
    return order


_SORT_VALUE_TYPES: dict[str, type] = {"date": datetime, "number": Decimal, "quantity": Decimal}


def _choice(request: SearchRequest, name: str, allowed: set[str]) -> str | None:
    value = first_value(request.result, name)
    if value is not None and value not in allowed:
        raise FhirError.of(
            Category.INCORRECT,
            f"{name} must be one of {sorted(allowed)}",
            code="value",
            expression=[name],
        )
    return value


def search(
    conn: Connection, ctx: RequestContext, resource_type: str, *, strict: bool = False
) -> Result:
    require(ctx.caller, resource_type, "s")
    parser = search_parser(ctx)
    request = parser.parse(resource_type, ctx.query)
    require_search(ctx.caller, request.touched_types())
    warnings = [
        _issue(f"Unknown or unsupported search parameter '{name}' was ignored")
        for name in request.unknown
    ]
    if warnings and strict:
        raise FhirError(
            Category.INCORRECT,
            tuple(
                Issue(w.diagnostics.replace(" was ignored", ""), "not-supported") for w in warnings
            ),
        )
    # The whole request is parsed and checked before any SQL: the same request gets
    # the same answer (a 400 or not) whatever is stored.
    count = page_size(request.result, ctx.settings)
    summary = _choice(request, "_summary", SUMMARY_VALUES)
    total_mode = _choice(request, "_total", TOTAL_VALUES)
    elements = requested_elements(resource_type, request.result)
    specs = parse_includes(request.result, ctx.services.registry)
    check_contained(request.result)
    compiler = SearchCompiler(ctx.base_url, ctx.services.compartment)
    sort = _sort(request, parser, compiler.pinned_owners(resource_type, request.criteria))
    order = [(key, descending) for key, descending, _ in sort]
    cursor = first_value(request.result, "_cursor")
    direction, position = decode_cursor(cursor, [kind for _, _, kind in sort])
    where = compiler.where(resource_type, request.criteria, request.reverse_chains, view=ctx.view)
    backwards = direction == "p"

    found: list[Found] = []
    if summary != "count" and count > 0:
        found = search_queries.page(
            conn,
            where,
            order,
            limit=count + 1,
            after=None if backwards else position,
            before=position if backwards else None,
        )
    more = len(found) > count  # beyond the page, in the direction read
    found = found[1:] if backwards and more else found[:count]
    has_next = (not backwards and more) or (backwards and bool(found))
    has_previous = (backwards and more) or (not backwards and cursor is not None)
    total = None
    # A first page that holds every match already tells the total: no COUNT query.
    first_page_is_all = cursor is None and summary != "count" and not has_next and count > 0
    if summary == "count" or count == 0 or total_mode in {"accurate", "estimate"}:
        total = len(found) if first_page_is_all else search_queries.count(conn, where)
    elif total_mode is None and cursor is None:
        if first_page_is_all:
            total = len(found)
        elif ctx.settings.search_total == "accurate":  # else: a quarter of a search's cost
            total = search_queries.count(conn, where)

    included, include_warnings = _includes(conn, ctx, specs, found)
    warnings.extend(include_warnings)

    links = _links(ctx, resource_type, request, count, cursor, found, has_next, has_previous)
    entries = [_entry(ctx, f, "match", summary, elements) for f in found]
    entries += [_entry(ctx, f, "include", summary, None) for f in included]
    if warnings:
        entries.append(
            {
                "resource": operation_outcome(Category.INCORRECT, warnings),
                "search": {"mode": "outcome"},
            }
        )
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": new_id(),
        "meta": {"lastUpdated": format_instant(utc_now())},
        "type": "searchset",
    }
    if total is not None:
        bundle["total"] = total
    bundle["link"] = links
    if entries:
        bundle["entry"] = entries
    return Result(200, bundle, patients=Result.owners(*(f.owner for f in [*found, *included])))


def encode_cursor(direction: str, found: Found) -> str:
    """``n`` (rows after) or ``p`` (rows before) a row, by its sort values and id."""
    values = [
        {"t": v.isoformat()}
        if isinstance(v, datetime)
        else _canonical(v)
        if isinstance(v, Decimal)
        else v
        for v in found.sort_values
    ]
    payload = jsonio.dumps([*values, found.resource_id])
    return direction + base64.urlsafe_b64encode(payload).decode().rstrip("=")


def _canonical(value: Decimal) -> Decimal:
    """The same number without trailing zeros, exactly (a cursor stays short when
    PostgreSQL gives 9.5e4999 back as 5000 digits)."""
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    while len(digits) > 1 and digits[-1] == 0:
        digits, exponent = digits[:-1], exponent + 1
    return Decimal((sign, digits, exponent))


def decode_cursor(cursor: str | None, kinds: list[type]) -> tuple[str, Position | None]:
    """Check a cursor against the search's sort keys: a value of the wrong type
    would otherwise reach the SQL comparison."""
    if cursor is None:
        return "n", None
    try:
        if cursor[:1] not in {"n", "p"} or len(cursor) > 32768:
            raise ValueError(cursor)
        raw = cursor[1:]
        decoded = jsonio.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        if not isinstance(decoded, list) or len(decoded) != len(kinds) + 1:
            raise ValueError(cursor)
        *values, resource_id = decoded
        if not isinstance(resource_id, str):
            raise ValueError(cursor)
        sort_values = tuple(
            datetime.fromisoformat(v["t"]) if isinstance(v, dict) else v for v in values
        )
        if any(isinstance(v, datetime) and v.tzinfo is None for v in sort_values):
            raise ValueError(cursor)
        for value, kind in zip(sort_values, kinds, strict=True):
            if value is None:
                continue
            if kind is Decimal:  # numbers sort exactly
                if isinstance(value, bool) or not isinstance(value, int | Decimal):
                    raise ValueError(cursor)
                if not decimal_in_range(Decimal(value)):
                    raise ValueError(cursor)
                continue
            if type(value) is not kind:
                raise ValueError(cursor)
    except (
        ValueError,
        TypeError,
        KeyError,
        ArithmeticError,
        binascii.Error,
        orjson.JSONDecodeError,
    ):
        raise FhirError.of(
            Category.INCORRECT,
            "_cursor is not a cursor this server issued for this search",
            code="value",
            expression=["_cursor"],
        ) from None
    return cursor[0], Position(sort_values, resource_id)


def _entry(
    ctx: RequestContext,
    found: Found,
    mode: str,
    summary: str | None,
    elements: frozenset[str] | None,
) -> dict[str, Any]:
    content: Any = orjson.Fragment(found.content)
    if summary in {"true", "text", "data"} or elements is not None:
        content = subset(jsonio.loads(found.content), summary, elements)
    return {
        "fullUrl": f"{ctx.base_url}/{found.resource_type}/{found.resource_id}",
        "resource": content,
        "search": {"mode": mode},
    }


def _links(
    ctx: RequestContext,
    resource_type: str,
    request: SearchRequest,
    count: int,
    cursor: str | None,
    found: list[Found],
    has_next: bool,
    has_previous: bool,
) -> list[dict[str, str]]:
    params: list[tuple[str, str]] = []
    for name, values in ctx.query.items():
        if name in {"_cursor", "_count", "_format", "_pretty"} or name in request.unknown:
            continue
        params.extend((name, v) for v in values)
    params.append(("_count", str(count)))
    base = f"{ctx.base_url}/{resource_type}"

    def url(extra: str | None) -> str:
        items = params + ([("_cursor", extra)] if extra else [])
        return base + "?" + "&".join(f"{k}={v}" for k, v in _encoded(items))

    links = [{"relation": "self", "url": url(cursor)}]
    if has_next and found:
        links.append({"relation": "next", "url": url(encode_cursor("n", found[-1]))})
    if has_previous and found:
        links.append({"relation": "previous", "url": url(encode_cursor("p", found[0]))})
    return links


def _encoded(items: list[tuple[str, str]]) -> list[tuple[str, str]]:
    from urllib.parse import quote

    return [(quote(k, safe=":._-"), quote(v, safe=":._-|,$/")) for k, v in items]


def _in_their_records(ctx: RequestContext, spec: Include, target_type: str) -> bool:
    """Whether what refers to a Patient through the spec's parameter lives in that
    patient's record (so a ``_revinclude`` reads those records only)."""
    parameter = ctx.services.registry.get(spec.source_type, spec.code)
    return (
        target_type == "Patient"
        and parameter is not None
        and ctx.services.compartment.pins_owner(spec.source_type, parameter.expression)
    )


def _includes(
    conn: Connection,
    ctx: RequestContext,
    specs: list[Include],
    found: list[Found],
) -> tuple[list[Found], list[Issue]]:
    if not specs or not found:
        return [], []
    seen = {(f.resource_type, f.resource_id) for f in found}
    included: list[Found] = []
    warnings: list[Issue] = []
    frontier = found
    limit = ctx.settings.max_include_count
    for depth in range(ctx.settings.max_include_depth):
        wanted: list[tuple[str, str]] = []
        for spec in specs:
            if depth > 0 and not spec.iterate:
                continue
            if spec.forward:
                sources = [f for f in frontier if f.resource_type == spec.source_type]
                if sources:
                    wanted += search_queries.referenced(
                        conn,
                        spec.source_type,
                        [f.resource_id for f in sources],
                        None if spec.code == "*" else spec.code,
                        spec.target,
                        owners=[f.owner for f in sources],
                    )
            else:
                by_type: dict[str, list[str]] = {}
                for f in frontier:
                    by_type.setdefault(f.resource_type, []).append(f.resource_id)
                for target_type, ids in by_type.items():
                    if spec.target and spec.target != target_type:
                        continue
                    wanted += search_queries.referring(
                        conn, spec.source_type, spec.code, target_type, ids,
                        owners=ids if _in_their_records(ctx, spec, target_type) else None,
                    )  # fmt: skip
        new = [w for w in dict.fromkeys(wanted) if w not in seen]
        if not new:
            break
        room = limit - len(included)
        if len(new) > room:
            warnings.append(
                _issue(
                    f"Only {limit} included resources are returned per page; "
                    "narrow the search or lower _count"
                )
            )
            new = new[:room]
        batch = [
            f
            for f in search_queries.read_many(conn, new, ctx.view)
            if ctx.caller.may(f.resource_type, "r") or ctx.caller.may(f.resource_type, "s")
        ]
        seen.update(new)
        included.extend(batch)
        frontier = batch
        if len(included) >= limit:
            break
    else:
        if any(spec.iterate for spec in specs):
            warnings.append(
                _issue(f"_include:iterate stopped after {ctx.settings.max_include_depth} rounds")
            )
    return included, warnings
