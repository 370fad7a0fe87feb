"""What a Bulk Data kick-off asks for, checked whole before a job is recorded
(Bulk Data Access IG v2, export.html): the types, ``_since``, ``_typeFilter``
compiled with the FHIR search's own parser and compiler, ``_elements`` per type,
the patients (``patient``, a Group's members) and what was ignored under
``Prefer: handling=lenient``. The same request gets the same answer (a 400 or
not) whatever is stored, but for ``patient`` ids, which must be on the server."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from ehr_service.fhir import jsonio
from ehr_service.fhir.errors import Category, FhirError, Issue
from ehr_service.fhir.export_parameters import (
    GENERAL,
    KICKOFF,
    NDJSON_FORMATS,
    SINGLE,
    TypeFilter,
    Unsupported,
    element_plan,
    listed,
    single,
    type_filters,
)
from ehr_service.fhir.primitives import parse_instant_param
from ehr_service.fhir.references import parse_reference
from ehr_service.fhir.resource_types import R4_RESOURCE_TYPES, check_type_parameter
from ehr_service.fhir.search.query import SearchRequest
from ehr_service.interactions.context import RequestContext, search_parser
from ehr_service.interactions.read import current_or_fail
from ehr_service.security.policy import forbidden, require, require_search
from ehr_service.storage import search_queries
from ehr_service.storage.bulk_export import FilterClauses
from ehr_service.storage.search_sql import SearchCompiler


@dataclass(frozen=True, slots=True)
class ExportPlan:
    types: tuple[str, ...]
    since: datetime | None
    patients: tuple[str, ...] | None  # only these patients' records (None: no limit)
    # ``_typeFilter``s, ORed per type (a type not here: whole), compiled twice: driven
    # by the most selective criterion's id set, and checked per resource (``scans``);
    # the export takes one or the other by how many resources match (bulk_export.py).
    filters: dict[str, tuple[FilterClauses, ...]]
    elements: dict[str, frozenset[str]]  # JSON names kept per type; not here: whole
    ignored: tuple[Issue, ...]  # not offered, ignored under Prefer: handling=lenient
    named: frozenset[str] = field(default_factory=frozenset)  # ``patient`` ids (the audit)
    scans: dict[str, tuple[FilterClauses, ...]] = field(default_factory=dict)


def plan(ctx: RequestContext, kind: str, group_id: str | None, lenient: bool) -> ExportPlan:
    query = ctx.query
    unsupported = Unsupported(lenient)
    for name in query:
        if name not in KICKOFF and name not in GENERAL:
            unsupported.refuse(f"$export has no parameter '{name[:64]}'", name[:64])
    for name in SINGLE:
        single(query, name)
    output_format = single(query, "_outputFormat")
    if output_format is not None and output_format not in NDJSON_FORMATS:
        unsupported.refuse(
            "_outputFormat: only NDJSON (application/fhir+ndjson) is offered", "_outputFormat"
        )
    since_value = single(query, "_since")
    since = parse_instant_param(since_value, "_since") if since_value else None
    types = _types(ctx, kind, query.get("_type"), unsupported)
    # compiled in a transaction: the SQL is that of the database's layout (Citus)
    with ctx.services.unit.read():
        filters, scans = _filters(
            ctx, kind, types, "_type" in query, query.get("_typeFilter"), unsupported
        )
    elements = element_plan(types, query.get("_elements"))
    for value in listed(query.get("includeAssociatedData")):
        unsupported.refuse(
            f"includeAssociatedData: '{value[:64]}' is not offered "
            "(Provenance is exported as the other types are)",
            "includeAssociatedData",
        )
    members = _members(ctx, group_id) if group_id is not None else None
    named = _named_patients(ctx, kind, group_id, members, query.get("patient"), unsupported)
    patients = members
    if named is not None:  # members already, for a Group
        patients = tuple(sorted(named))
    return ExportPlan(
        types,
        since,
        patients,
        filters,
        elements,
        tuple(unsupported.issues),
        frozenset(named or ()),
        scans,
    )


def _types(
    ctx: RequestContext, kind: str, requested: list[str] | None, unsupported: Unsupported
) -> tuple[str, ...]:
    member_types = ctx.services.compartment.member_types() | {"Patient"}
    if requested is not None:
        names = listed(requested)
        check_type_parameter(names)
        for name in names:
            require(ctx.caller, name, "r")
        types = sorted(set(names))
        outside = [t for t in types if t not in member_types]
        if kind != "system" and outside:
            unsupported.refuse(
                f"_type: {', '.join(outside)[:200]} belong to no patient's record; "
                f"a {kind}-level export has patients' records only",
                "_type",
            )
    else:
        types = sorted(t for t in R4_RESOURCE_TYPES if ctx.caller.may(t, "r"))
        if not types:
            raise forbidden("The token's scopes allow reading no resource type")
    if kind != "system":
        types = [t for t in types if t in member_types]
    return tuple(types)


def _filters(
    ctx: RequestContext,
    kind: str,
    types: tuple[str, ...],
    typed: bool,
    values: list[str] | None,
    unsupported: Unsupported,
) -> tuple[dict[str, tuple[FilterClauses, ...]], dict[str, tuple[FilterClauses, ...]]]:
    filters: dict[str, list[FilterClauses]] = {}
    scans: dict[str, list[FilterClauses]] = {}
    for wanted in type_filters(values):
        resource_type = wanted.resource_type
        if resource_type not in types:
            if typed:
                message = f"_typeFilter: {resource_type} is not in _type"
            else:
                require(ctx.caller, resource_type, "r")
                message = f"_typeFilter: a {kind}-level export has no {resource_type}"
            raise FhirError.of(
                Category.INCORRECT, message, code="value", expression=["_typeFilter"]
            )
        request = _parse(ctx, wanted, unsupported)
        require_search(ctx.caller, request.touched_types())
        try:
            compiler = SearchCompiler(ctx.base_url)
            where = compiler.where(
                resource_type, request.criteria, request.reverse_chains, view=ctx.view
            )
            scan = compiler.where(resource_type, request.criteria, request.reverse_chains,
                                  view=ctx.view, drive=False)  # fmt: skip
        except FhirError as error:
            raise _in_filter(error, wanted) from None
        filters.setdefault(resource_type, []).append(where)
        scans.setdefault(resource_type, []).append(scan)
    return (
        {t: tuple(clauses) for t, clauses in filters.items()},
        {t: tuple(clauses) for t, clauses in scans.items()},
    )


def _parse(ctx: RequestContext, wanted: TypeFilter, unsupported: Unsupported) -> SearchRequest:
    """The query parsed as the FHIR search parses it, one parameter at a time so
    that, under lenient handling, what this server cannot search by is left out."""
    parser = search_parser(ctx)
    whole = SearchRequest(wanted.resource_type)
    for name, values in wanted.query.items():
        try:
            request = parser.parse(wanted.resource_type, {name: values})
        except FhirError as error:
            if error.category is not Category.NOT_IMPLEMENTED:
                raise _in_filter(error, wanted) from None
            reason = error.issues[0].diagnostics if error.issues else "not supported"
            unsupported.refuse(f"_typeFilter {wanted.text[:200]}: {reason}", "_typeFilter")
            continue
        for unknown in request.unknown:
            unsupported.refuse(
                f"_typeFilter {wanted.text[:200]}: Unknown or unsupported search parameter "
                f"'{unknown[:64]}'",
                "_typeFilter",
            )
        if request.result:
            unsupported.refuse(
                f"_typeFilter {wanted.text[:200]}: '{name[:64]}' is a search result "
                "parameter, which a _typeFilter may not use",
                "_typeFilter",
            )
        whole.criteria.extend(request.criteria)
        whole.reverse_chains.extend(request.reverse_chains)
    return whole


def _in_filter(error: FhirError, wanted: TypeFilter) -> FhirError:
    """The search's own error, saying which ``_typeFilter`` it is about (what the
    search cannot do is a 400 here: a kick-off parameter the server does not offer)."""
    category = error.category
    if category is Category.NOT_IMPLEMENTED:
        category = Category.INCORRECT
    issues = tuple(
        Issue(
            f"_typeFilter {wanted.text[:200]}: {issue.diagnostics}",
            issue.code,
            issue.severity,
            issue.expression,
        )
        for issue in error.issues
    )
    return FhirError(category, issues, error.headers)


def _members(ctx: RequestContext, group_id: str) -> tuple[str, ...]:
    require(ctx.caller, "Group", "r")
    with ctx.services.unit.read() as conn:
        stored = current_or_fail(conn, "Group", group_id, view=ctx.view)
    group = jsonio.loads(stored.content or b"{}")
    members = []
    for member in group.get("member") or ():
        reference = str(((member or {}).get("entity") or {}).get("reference", ""))
        if reference.startswith("Patient/"):
            members.append(reference.removeprefix("Patient/"))
    return tuple(dict.fromkeys(members))


def _named_patients(
    ctx: RequestContext,
    kind: str,
    group_id: str | None,
    members: tuple[str, ...] | None,
    values: list[str] | None,
    unsupported: Unsupported,
) -> frozenset[str] | None:
    """The ``patient`` ids, each a Patient this caller may see (and, for a Group, a
    member of it); a refused resident's record answers as one that does not exist."""
    if values is None:
        return None
    if kind == "system":
        unsupported.refuse("patient applies to Patient- and Group-level exports only", "patient")
        return None
    ids = []
    for value in listed(values):
        if value.startswith(ctx.base_url + "/"):
            value = value[len(ctx.base_url) + 1 :]
        reference = parse_reference(value)
        if reference is None or reference.base is not None or reference.resource_type != "Patient":
            raise FhirError.of(
                Category.INCORRECT,
                f"patient: '{value[:100]}' is not a reference to a Patient",
                code="value",
                expression=["patient"],
            )
        ids.append(reference.resource_id)
    require(ctx.caller, "Patient", "r")
    with ctx.services.unit.read() as conn:
        found = search_queries.read_many(conn, [("Patient", i) for i in ids], ctx.view)
    present = {f.resource_id for f in found}
    named = set()
    for patient_id in dict.fromkeys(ids):
        if patient_id not in present:
            unsupported.refuse(
                f"patient: Patient/{patient_id} is not on this server", "patient", "not-found"
            )
        elif members is not None and patient_id not in members:
            unsupported.refuse(
                f"patient: Patient/{patient_id} is not a member of Group/{group_id}",
                "patient",
                "not-found",
            )
        else:
            named.add(patient_id)
    return frozenset(named)
