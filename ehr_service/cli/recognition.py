"""``ehr-service catalogue`` and ``ehr-service institution``: the recognition domain's
catalogue editions and institutions with their quality control."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer

from ehr_service.cli.common import check_region, refuse, service_context
from ehr_service.fhir import jsonio

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from ehr_service.interactions.context import RequestContext


catalogue_app = typer.Typer(help="the catalogue of recognised items", no_args_is_help=True)
institution_app = typer.Typer(help="institutions and their quality control", no_args_is_help=True)


@catalogue_app.command("load")
def catalogue_load(
    file: Annotated[Path, typer.Argument(help="a CodeSystem, or a Bundle of it and ConceptMaps")],
) -> None:
    """Load a catalogue edition and make it the active one (no code changes needed):
    its items, code maps, and its CodeSystem and ConceptMaps as FHIR resources, in one
    transaction; then the recognition marks of stored results follow the new edition."""
    from ehr_service.fhir.errors import FhirError
    from ehr_service.fhir.validation import validate_resource
    from ehr_service.interactions import terminology
    from ehr_service.recognition.catalogue import CatalogueError, parse_edition
    from ehr_service.storage import unit_of_work

    try:
        document = jsonio.loads(file.read_bytes())
        _, _, _, resources = parse_edition(document)  # refused before anything is stored
        for resource in resources:
            validate_resource(resource)
    except (OSError, orjson.JSONDecodeError, CatalogueError, FhirError) as exc:
        typer.echo(f"{file.name}: {exc}", err=True)
        raise typer.Exit(1) from None
    with service_context("catalogue-load") as ctx:
        catalogues = ctx.services.catalogues
        assert catalogues is not None
        try:
            with ctx.services.unit.write() as conn:
                row, _ = catalogues.store(conn, document)
                terminology.publish(conn, ctx, document)  # replaced in the same transaction
        except (CatalogueError, FhirError) as exc:
            typer.echo(f"{file.name}: {exc}", err=True)
            raise typer.Exit(1) from None
        remarker = ctx.services.remarker
        assert remarker is not None
        auditor = ctx.services.auditor

        def remarked(conn: Connection, records: list[str]) -> None:  # one event a batch
            event = auditor.operator_event(
                ctx.caller, "catalogue-remark", None, set(records) - {""}
            )
            unit_of_work.record(conn, event)

        changed = remarker.remark_all(ctx.services.unit, ctx.base_url, on_batch=remarked)
    typer.echo(
        f"edition {row['edition']} active: {row['items']} items; {changed} results re-marked"
    )


@catalogue_app.command("list")
def catalogue_list() -> None:
    """The loaded editions; the active one is marked."""
    from ehr_service.storage import recognition as store

    with service_context("catalogue-list") as ctx, ctx.services.unit.read() as conn:
        for edition in store.editions(conn):
            mark = "active" if edition["active"] else "-"
            typer.echo(f"{edition['edition']}  {edition['items']} items  {mark}")


def _find_organization(ctx: RequestContext, org_id: str) -> dict[str, Any] | None:
    from ehr_service.storage import resources

    with ctx.services.unit.read() as conn:
        content = resources.live_contents(conn, "Organization", [org_id]).get(org_id)
    return None if content is None else dict(jsonio.loads(content))


def _organization(ctx: RequestContext, org_id: str) -> dict[str, Any]:
    document = _find_organization(ctx, org_id)
    if document is None:
        typer.echo(f"no Organization/{org_id}", err=True)
        raise typer.Exit(1)
    return document


def _store_organization(ctx: RequestContext, document: dict[str, Any]) -> None:
    from ehr_service.fhir.errors import FhirError
    from ehr_service.interactions import update

    try:
        with ctx.services.unit.write() as conn:
            result = update.update(conn, ctx, "Organization", document["id"], document)
            ctx.services.auditor.record(conn, ctx, result)  # with the results it re-marked
    except FhirError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None


@institution_app.command("add")
def institution_add(
    org_id: str,
    name: Annotated[str, typer.Option(help="the institution's name")],
    region: Annotated[
        str, typer.Option(help="chongqing or sichuan (EHR_REGIONS), or a partner's region")
    ],
    level: Annotated[str | None, typer.Option(help="e.g. 3A (三级甲等)")] = None,
    uscc: Annotated[
        str | None, typer.Option(help="unified social credit code (GB 32100-2015, 18 characters)")
    ] = None,
    licence: Annotated[
        str | None, typer.Option(help="practising-licence registration number (执业许可证登记号)")
    ] = None,
    kind: Annotated[
        str | None, typer.Option("--type", help="WS 218-2002 institution type, e.g. A100")
    ] = None,
    grade: Annotated[
        str | None, typer.Option(help="hospital grade code of the Chongqing IG, 1-14 (2: 三级甲等)")
    ] = None,
    district: Annotated[
        str | None, typer.Option(help="6-digit county-level division code, e.g. 500103")
    ] = None,
) -> None:
    """Create or update Organization/ID with its region, level and master data (the
    recognition-institution profile is claimed once licence, type and district are known)."""
    from ehr_service.recognition.institutions import LEVEL_URL, REGION_URL

    document: dict[str, Any] = {"resourceType": "Organization", "id": org_id, "name": name,
                                "active": True}  # fmt: skip
    with service_context("institution-add") as ctx:
        check_region(ctx.services.unit, ctx.settings, region)
        document = (_find_organization(ctx, org_id) or document) | {"name": name}
        ours = {REGION_URL: {"valueCode": region}}
        if level:
            ours[LEVEL_URL] = {"valueCode": level}
        master = _master_data(document, uscc, licence, kind, grade, district)
        extensions = [{"url": url, **value} for url, value in (ours | master).items()]
        replaced = set(ours) | set(master) | {LEVEL_URL}
        others = [e for e in document.get("extension") or () if e.get("url") not in replaced]
        document["extension"] = extensions + others
        _store_organization(ctx, document)
    typer.echo(f"Organization/{org_id}  {name}  region={region}  level={level or '-'}")


def _master_data(
    document: dict[str, Any],
    uscc: str | None,
    licence: str | None,
    kind: str | None,
    grade: str | None,
    district: str | None,
) -> dict[str, dict[str, Any]]:
    """Set the identifiers the options give on ``document``; returns the IG's extensions."""
    from ehr_service.recognition import master_data as md

    identifiers = list(document.get("identifier") or ())
    for code, display, value in (("USCC", "统一社会信用代码", uscc),
                                 ("MIPLRN", "医疗机构执业许可证登记号", licence)):  # fmt: skip
        if value is None:
            continue
        identifiers = [i for i in identifiers if not md.typed_as(i, code)]
        identifiers.append({"use": "official", "type": md.typed(code, display), "value": value})
    if identifiers:
        document["identifier"] = identifiers
    extensions: dict[str, dict[str, Any]] = {}
    for url, system, given in ((md.INSTITUTION_TYPE_URL, md.INSTITUTION_TYPES, kind),
                               (md.HOSPITAL_GRADE_URL, md.HOSPITAL_GRADES, grade),
                               (md.DISTRICT_URL, md.DISTRICTS, district)):  # fmt: skip
        if given is not None:
            extensions[url] = {"valueCoding": {"system": system, "code": given}}
    if md.complete(document, extensions):
        meta = dict(document.get("meta") or {})
        profiles = [p for p in meta.get("profile") or () if p != md.INSTITUTION_PROFILE]
        meta["profile"] = [*profiles, md.INSTITUTION_PROFILE]
        document["meta"] = meta
    return extensions


@institution_app.command("qc")
def institution_qc(
    org_id: str,
    category: Annotated[str, typer.Option(help="e.g. lab-chemistry, imaging-CT")],
    scheme: Annotated[str, typer.Option(help="e.g. NCCL EQA")],
    cycle: Annotated[str, typer.Option(help="e.g. 2026-1")],
    start: Annotated[str, typer.Option("--from", help="valid from (YYYY-MM-DD)")],
    end: Annotated[str, typer.Option("--to", help="valid to (YYYY-MM-DD)")],
    passed: Annotated[bool, typer.Option("--passed/--failed")] = True,
) -> None:
    """Add a quality-control record to an institution."""
    from datetime import date

    from ehr_service.recognition.institutions import quality_control_extension

    days = []
    for value in (start, end):
        try:
            days.append(date.fromisoformat(value))
        except ValueError:
            refuse(f"not a date: {value}")
    if days[1] < days[0]:
        refuse(f"the quality-control period ends (--to {end}) before it starts (--from {start})")
    with service_context("institution-qc") as ctx:
        document = _organization(ctx, org_id)
        valid = (days[0].isoformat(), days[1].isoformat())  # 20260101 as 2026-01-01
        record = quality_control_extension(category, scheme, cycle, passed, *valid)
        document["extension"] = [*(document.get("extension") or ()), record]
        _store_organization(ctx, document)
    typer.echo(f"Organization/{org_id}: {category} {cycle} {'passed' if passed else 'failed'}")


@institution_app.command("show")
def institution_show(org_id: str) -> None:
    """An institution's region, level, master data and quality-control records."""
    from ehr_service.recognition import master_data as md
    from ehr_service.recognition.institutions import institution_of

    with service_context("institution-show") as ctx:
        document = _organization(ctx, org_id)
        institution = institution_of(f"Organization/{org_id}", document)
    typer.echo(
        f"{institution.reference}  {institution.name or '-'}  region={institution.region or '-'}"
        f"  level={institution.level or '-'}"
    )
    for label, value in md.summary(document):
        typer.echo(f"  {label}: {value}")
    for qc in institution.quality_control:
        typer.echo(
            f"  {qc.category}  {qc.scheme or '-'}  {qc.cycle or '-'}  "
            f"{'passed' if qc.passed else 'failed'}  {qc.start or '-'} .. {qc.end or '-'}"
        )
