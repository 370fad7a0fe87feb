"""batch and transaction (R4 §3.1.0.11).

A transaction is all-or-nothing in one database transaction, processed in the
order the spec prescribes (DELETE, POST, PUT/PATCH, then GET/HEAD), with
placeholder fullUrls (``urn:uuid:``...) rewritten in every reference of the
bundle before anything is stored. A batch runs each entry on its own and
reports each entry's outcome. Both answer with entries in request order.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
from sqlalchemy import Connection

from ehr_service.fhir import jsonio
from ehr_service.fhir.errors import (
    Category,
    FhirError,
    error_outcome,
    operation_outcome,
    unexpected,
)
from ehr_service.fhir.primitives import format_instant, new_id, parse_etag, utc_now
from ehr_service.fhir.references import is_conditional_reference, rewrite_references
from ehr_service.interactions import conditional, dispatch
from ehr_service.interactions.context import RequestContext
from ehr_service.interactions.create import created, prepare_create
from ehr_service.interactions.patch import (
    JSON_PATCH_MEDIA_TYPE,
    MERGE_PATCH_MEDIA_TYPE,
    PatchDocument,
    patch_document,
)
from ehr_service.interactions.results import Result, status_line
from ehr_service.interactions.routing import Interaction, Route, route
from ehr_service.security.policy import require
from ehr_service.security.references import PENDING_IDENTITIES
from ehr_service.storage import resources
from ehr_service.storage.database import transaction_cache

logger = logging.getLogger(__name__)
_BINARY_PATCHES = frozenset({JSON_PATCH_MEDIA_TYPE, MERGE_PATCH_MEDIA_TYPE})
_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
_WRITES = {Interaction.CREATE, Interaction.UPDATE, Interaction.PATCH, Interaction.DELETE}


@dataclass(slots=True)
class Entry:
    index: int
    method: str
    route: Route
    resource: Any = None
    full_url: str | None = None
    if_match: int | None = None
    if_none_match: int | None = None
    if_none_exist: str | None = None
    assigned_id: str | None = None
    result: Result | None = field(default=None)
    validated: bool = False  # structurally checked before the transaction opened

    @property
    def where(self) -> str:
        return f"Bundle.entry[{self.index}]"


def process_bundle(ctx: RequestContext, body: Any) -> Result:
    """POST [base] with a Bundle of type batch or transaction."""
    bundle_type, raw_entries = _check_bundle(ctx, body)
    if bundle_type == "transaction":
        return _transaction(ctx, raw_entries)
    return _batch(ctx, raw_entries)


def _check_bundle(ctx: RequestContext, body: Any) -> tuple[str, list[Any]]:
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        raise FhirError.of(
            Category.INCORRECT,
            "POST to the base needs a Bundle",
            code="structure",
            expression=["resourceType"],
        )
    bundle_type = body.get("type")
    if not isinstance(bundle_type, str) or bundle_type not in {"batch", "transaction"}:
        raise FhirError.of(
            Category.INCORRECT,
            "POST to the base takes a Bundle of type 'batch' or 'transaction'",
            code="value",
            expression=["Bundle.type"],
        )
    entries = body.get("entry", [])
    if not isinstance(entries, list):
        raise FhirError.of(
            Category.INCORRECT,
            "Bundle.entry must be an array",
            code="structure",
            expression=["Bundle.entry"],
        )
    limit = ctx.settings.max_bundle_entries
    if len(entries) > limit:
        raise FhirError.of(
            Category.TOO_LARGE,
            f"The bundle has {len(entries)} entries; this server takes at most {limit}",
            code="too-long",
            expression=["Bundle.entry"],
        )
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise FhirError.of(
                Category.INCORRECT,
                f"Bundle.entry[{index}] must be an object",
                code="structure",
                expression=[f"Bundle.entry[{index}]"],
            )
    return bundle_type, entries


def _parse_entry(ctx: RequestContext, index: int, raw: Any) -> Entry:
    where = f"Bundle.entry[{index}]"
    request = raw.get("request") if isinstance(raw, dict) else None
    if not isinstance(request, dict):
        raise FhirError.of(
            Category.INCORRECT,
            f"{where} has no request",
            code="required",
            expression=[f"{where}.request"],
        )
    method, url = request.get("method"), request.get("url")
    if not isinstance(method, str) or method not in _ORDER or not isinstance(url, str) or not url:
        raise FhirError.of(
            Category.INCORRECT,
            f"{where}.request needs a method (GET, HEAD, POST, PUT, PATCH, DELETE) and a url",
            code="required",
            expression=[f"{where}.request"],
        )
    target = route(method, url, ctx.base_url)
    if_none_exist = request.get("ifNoneExist")
    if if_none_exist is not None and (
        not isinstance(if_none_exist, str) or target.interaction is not Interaction.CREATE
    ):
        raise FhirError.of(
            Category.INCORRECT,
            f"{where}.request.ifNoneExist is a search string, for POST only",
            code="invalid",
            expression=[f"{where}.request.ifNoneExist"],
        )
    resource = raw.get("resource")
    needs_body = {Interaction.CREATE, Interaction.UPDATE}
    if (
        target.interaction in needs_body
        or (target.interaction is Interaction.CONDITIONAL and method in {"PUT", "PATCH"})
    ) and resource is None:
        raise FhirError.of(
            Category.INCORRECT,
            f"{where} needs a resource for {method}",
            code="required",
            expression=[f"{where}.resource"],
        )
    if method == "PATCH":
        resource = _patch_document(where, resource)
    full_url = raw.get("fullUrl")
    if_match = request.get("ifMatch")
    if_none_match = request.get("ifNoneMatch")
    return Entry(
        index,
        method,
        target,
        resource,
        full_url if isinstance(full_url, str) else None,
        parse_etag(if_match) if isinstance(if_match, str) else None,
        parse_etag(if_none_match, "If-None-Match") if isinstance(if_none_match, str) else None,
        if_none_exist,
    )


def _patch_document(where: str, resource: Any) -> PatchDocument:
    """A PATCH entry carries its patch as a resource (R4 §3.1.0.11.1): a Parameters
    (FHIRPath Patch), or a Binary holding a JSON Patch or a JSON merge patch."""
    if isinstance(resource, dict) and resource.get("resourceType") == "Parameters":
        return PatchDocument("fhirpath-patch", resource)
    if (
        not isinstance(resource, dict)
        or resource.get("resourceType") != "Binary"
        or resource.get("contentType") not in _BINARY_PATCHES
        or not isinstance(resource.get("data"), str)
    ):
        raise FhirError.of(
            Category.INCORRECT,
            f"{where}: a PATCH entry needs a Parameters (FHIRPath Patch) or a Binary with "
            f"contentType {' or '.join(sorted(_BINARY_PATCHES))}",
            code="structure",
            expression=[f"{where}.resource"],
        )
    try:
        body = jsonio.loads(base64.b64decode(resource["data"], validate=True))
    except (binascii.Error, ValueError):
        raise FhirError.of(
            Category.INCORRECT,
            f"{where}: the Binary holds no JSON patch",
            code="structure",
            expression=[f"{where}.resource.data"],
        ) from None
    return patch_document(resource["contentType"], body)


def _in_entry(entry_index: int, error: FhirError) -> FhirError:
    """Locate an entry's error inside the bundle (issue.expression and diagnostics)."""
    where = f"Bundle.entry[{entry_index}]"
    issues = []
    for issue in error.issues:
        located = []
        for expression in issue.expression or ("",):
            head, _, rest = expression.partition(".")
            if expression.startswith("Bundle.entry["):
                located.append(expression)
            elif head[:1].isupper() and head.isalpha():
                located.append(f"{where}.resource" + (f".{rest}" if rest else ""))
            else:
                located.append(f"{where}" + (f".{expression}" if expression else ""))
        diagnostics = issue.diagnostics
        if not diagnostics.startswith(where):
            diagnostics = f"{where}: {diagnostics}"
        issues.append(replace(issue, diagnostics=diagnostics, expression=tuple(located)))
    return FhirError(error.category, tuple(issues), error.headers)


def _transaction(ctx: RequestContext, raw_entries: list[Any]) -> Result:
    entries: list[Entry] = []
    for index, raw in enumerate(raw_entries):
        try:
            entries.append(_parse_entry(ctx, index, raw))
        except FhirError as error:
            raise _in_entry(index, error) from None
    ordered = sorted(entries, key=lambda e: _ORDER[e.method])
    _validate_ahead(ctx, entries)  # while no transaction (on SQLite: no write lock) is held
    with ctx.services.unit.write() as conn:
        _resolve_placeholders(conn, ctx, entries)
        for entry in ordered:
            if entry.method == "DELETE":
                _run_entry(conn, ctx, entry)
        # Conditional creates that found nothing hold their criteria's key by now.
        _bulk_create(conn, ctx, [e for e in ordered if e.method == "POST" and e.result is None])
        for entry in ordered:
            if entry.method not in {"DELETE", "POST"}:
                _run_entry(conn, ctx, entry)
        touched = Result.owners(*(p for e in entries if e.result for p in e.result.patients))
        result = Result(
            200, _response_bundle(ctx, "transaction-response", entries), patients=touched
        )
        ctx.services.auditor.record(conn, ctx, result)  # commits with the transaction
    return result


def _resolve_placeholders(conn: Connection, ctx: RequestContext, entries: list[Entry]) -> None:
    """Assign ids to created resources and rewrite every placeholder reference
    and conditional reference (``Patient?identifier=...``) of the bundle."""
    mapping: dict[str, str] = {}
    identities: dict[str, int] = {}
    pending = transaction_cache(conn, PENDING_IDENTITIES)
    creating: dict[tuple[str, str], int] = {}  # conditional creates that found nothing
    for entry in entries:
        target = entry.route
        if target.interaction is Interaction.CREATE and entry.if_none_exist is not None:
            key = (str(target.resource_type), entry.if_none_exist.strip())
            if key in creating:
                raise FhirError.of(
                    Category.INCORRECT,
                    f"Bundle.entry[{entry.index}] and Bundle.entry[{creating[key]}] "
                    "conditionally create the same resource",
                    code="invalid",
                    expression=[f"Bundle.entry[{entry.index}].request.ifNoneExist"],
                )
            creating[key] = entry.index
        if target.interaction is Interaction.CREATE:
            entry.assigned_id = new_id()
            if entry.if_none_exist is not None:  # the winner's id if a match exists
                try:
                    match = conditional.claim_or_match(
                        conn, ctx, str(target.resource_type), entry.if_none_exist, entry.assigned_id
                    )
                except FhirError as error:
                    raise _in_entry(entry.index, error) from None
                if match is not None:  # If-None-Exist found it: nothing to create
                    entry.result = conditional.existing_result(
                        conn, str(target.resource_type), match
                    )
                    entry.assigned_id = match
            identity = f"{target.resource_type}/{entry.assigned_id}"
            if entry.result is None:
                pending[identity] = entry.index
        elif target.interaction in _WRITES:
            identity = f"{target.resource_type}/{target.resource_id}"
            if identity in identities:
                raise FhirError.of(
                    Category.INCORRECT,
                    f"Bundle.entry[{entry.index}] and Bundle.entry[{identities[identity]}] "
                    f"both change {identity}",
                    code="invalid",
                    expression=[f"Bundle.entry[{entry.index}].request.url"],
                )
            identities[identity] = entry.index
        else:
            continue
        if entry.full_url:
            if entry.full_url in mapping:
                raise FhirError.of(
                    Category.INCORRECT,
                    f"Bundle.entry[{entry.index}].fullUrl '{entry.full_url[:100]}' is not unique",
                    code="invalid",
                    expression=[f"Bundle.entry[{entry.index}].fullUrl"],
                )
            mapping[entry.full_url] = identity
    for entry in entries:
        if entry.method not in {"POST", "PUT"} or entry.result is not None:
            continue
        unresolved = rewrite_references(entry.resource, mapping)
        searches = [r for r in unresolved if is_conditional_reference(r)]
        if searches:  # Patient?identifier=...: resolve, then rewrite once more
            for reference in searches:
                try:
                    mapping[reference] = conditional.resolve_reference(conn, ctx, reference)
                except FhirError as error:
                    raise _in_entry(entry.index, error) from None
            unresolved = rewrite_references(entry.resource, mapping)
        if unresolved:
            raise FhirError.of(
                Category.INCORRECT,
                f"Bundle.entry[{entry.index}] refers to '{unresolved[0][:100]}', "
                "which no entry of the bundle defines",
                code="not-found",
                expression=[f"Bundle.entry[{entry.index}].resource"],
            )


def _validate_ahead(ctx: RequestContext, entries: list[Entry]) -> None:
    """The structure of every created resource, before the transaction: the
    expensive part of a write, with no lock held while it runs."""
    now = utc_now()
    for entry in entries:
        if entry.method == "POST" and entry.route.resource_type is not None:
            try:
                require(ctx.caller, entry.route.resource_type, "c")  # rights before content
                ctx.services.pipeline.validate_ahead(
                    entry.resource, entry.route.resource_type, "POST", now
                )
            except FhirError as error:
                raise _in_entry(entry.index, error) from None
            entry.validated = True


def _bulk_create(conn: Connection, ctx: RequestContext, entries: list[Entry]) -> None:
    versions = []
    now = utc_now()  # one moment for every resource the transaction creates
    for entry in entries:
        try:
            assert entry.route.resource_type is not None
            version = prepare_create(
                conn, ctx, entry.route.resource_type, entry.resource, entry.assigned_id,
                now=now, validated=entry.validated,
            )  # fmt: skip
        except FhirError as error:
            raise _in_entry(entry.index, error) from None
        versions.append(version)
        entry.result = created(version)
    resources.insert_new(conn, versions)


def _run_entry(conn: Connection, ctx: RequestContext, entry: Entry) -> None:
    try:
        entry.result = dispatch.run(
            conn, ctx, entry.route, entry.resource, entry.if_match, entry.if_none_match
        )
    except FhirError as error:
        raise _in_entry(entry.index, error) from None


def _batch(ctx: RequestContext, raw_entries: list[Any]) -> Result:
    results: list[Result | FhirError] = []
    for index, raw in enumerate(raw_entries):
        try:
            entry = _parse_entry(ctx, index, raw)
            read_only = entry.method in {"GET", "HEAD"}
            unit: Callable[[], Any] = (
                ctx.services.unit.read if read_only else ctx.services.unit.write
            )
            with unit() as conn:
                _run_entry(conn, ctx, entry)
                assert entry.result is not None
                if not read_only:  # each write commits with its own event
                    ctx.services.auditor.record(conn, _entry_context(ctx, entry), entry.result)
            results.append(entry.result)
        except FhirError as error:
            results.append(_in_entry(index, error))
        except Exception:  # a bug in one entry: its own 500; the others stand
            logger.exception("request %s: batch entry %d failed", ctx.request_id, index)
            results.append(_in_entry(index, unexpected(ctx.request_id)))
    touched = Result.owners(*(p for r in results if isinstance(r, Result) for p in r.patients))
    result = Result(200, _response_entries(ctx, "batch-response", results), patients=touched)
    ctx.services.auditor.record_now(ctx, result)
    return result


# bundle entry interactions -> the names their HTTP routes audit them under
_AUDITED_AS = {
    Interaction.CREATE: "create_resource",
    Interaction.UPDATE: "update_resource",
    Interaction.PATCH: "patch_resource",
    Interaction.DELETE: "delete_resource",
}
_CONDITIONAL_AUDITED_AS = {
    "PUT": "conditional_update",
    "PATCH": "conditional_patch",
    "DELETE": "conditional_delete",
}


def _entry_context(ctx: RequestContext, entry: Entry) -> RequestContext:
    """The context a batch entry's own audit event is recorded with."""
    kind = entry.route.interaction
    name = (
        _CONDITIONAL_AUDITED_AS.get(entry.method, "batch_or_transaction")
        if kind is Interaction.CONDITIONAL
        else _AUDITED_AS.get(kind, "batch_or_transaction")
    )
    return replace(ctx, interaction=name, path=f"/fhir/{entry.route.resource_type}")


def _response_bundle(ctx: RequestContext, bundle_type: str, entries: list[Entry]) -> dict[str, Any]:
    results: list[Result | FhirError] = []
    for entry in entries:
        assert entry.result is not None
        results.append(entry.result)
    return _response_entries(ctx, bundle_type, results)


def _response_entries(
    ctx: RequestContext, bundle_type: str, results: list[Result | FhirError]
) -> dict[str, Any]:
    out = []
    for result in results:
        if isinstance(result, FhirError):
            out.append(
                {
                    "response": {
                        "status": status_line(result.status),
                        "outcome": error_outcome(result),
                    }
                }
            )
            continue
        out.append(_result_entry(ctx, result))
    return {
        "resourceType": "Bundle",
        "id": new_id(),
        "meta": {"lastUpdated": format_instant(utc_now())},
        "type": bundle_type,
        "entry": out,
    }


def _result_entry(ctx: RequestContext, result: Result) -> dict[str, Any]:
    if result.message is not None:  # a write: Prefer: return shapes it
        result = result.shaped(ctx.prefer_return)
    entry: dict[str, Any] = {}
    if result.resource_type and result.resource_id:
        entry["fullUrl"] = f"{ctx.base_url}/{result.resource_type}/{result.resource_id}"
    response: dict[str, Any] = {"status": status_line(result.status)}
    if result.location:
        response["location"] = result.location
    if result.version_id is not None:
        response["etag"] = f'W/"{result.version_id}"'
    if result.last_updated is not None:
        response["lastModified"] = format_instant(result.last_updated)
    if isinstance(result.body, dict) and result.body.get("resourceType") == "OperationOutcome":
        response["outcome"] = result.body
    elif result.warnings:  # R4: entry.response.outcome carries hints and warnings
        response["outcome"] = operation_outcome(Category.UNPROCESSABLE, result.warnings)
    elif isinstance(result.body, bytes):
        entry["resource"] = orjson.Fragment(result.body)
    elif result.body is not None:
        entry["resource"] = result.body
    entry["response"] = response
    return entry
