"""The data commands: load, reindex, generate, import, export."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ehr_service.cli.common import (
    batch,
    import_worker_context,
    operator_context,
    progress_reporter,
    service_context,
    settings_from_env,
)
from ehr_service.fhir import jsonio

if TYPE_CHECKING:
    pass


def load(
    paths: Annotated[list[Path], typer.Argument(help="transaction or batch Bundle JSON files")],
) -> None:
    """Post bundle files to the database as transactions (or batches), in order."""
    from dataclasses import replace

    from ehr_service.app import build_services
    from ehr_service.fhir.errors import FhirError
    from ehr_service.interactions.bundle import process_bundle
    from ehr_service.interactions.context import ReturnPreference

    services = build_services(batch(settings_from_env()))
    ctx = replace(operator_context(services, "load"), prefer_return=ReturnPreference.MINIMAL)
    failed = 0
    try:
        for path in paths:
            try:
                result = process_bundle(ctx, jsonio.loads(path.read_bytes()))
            except FhirError as error:
                failed += 1
                typer.echo(f"{path}: {error}", err=True)
                continue
            entries = len(result.body.get("entry", [])) if isinstance(result.body, dict) else 0
            typer.echo(f"{path}: {entries} entries")
    finally:
        services.database.dispose()
    if failed:
        raise typer.Exit(1)


def reindex(
    resource_type: Annotated[str | None, typer.Option("--type", help="only this type")] = None,
) -> None:
    """Rebuild the search indexes (after search parameter definitions change)."""
    from ehr_service.app import build_services
    from ehr_service.interactions.reindex import reindex as run_reindex

    services = build_services(batch(settings_from_env()))
    operator_context(services, "reindex")  # its writes are audited as the operator's
    try:
        count = run_reindex(
            services, resource_type, progress=lambda n: typer.echo(f"{n} resources", err=True)
        )
    finally:
        services.database.dispose()
    typer.echo(f"reindexed {count} resources")


def generate(
    residents: Annotated[int, typer.Option(min=1, help="how many residents")],
    out: Annotated[Path, typer.Option(help="directory: ndjson/ and bundles/ are written there")],
    seed: Annotated[int, typer.Option(help="the same seed gives the same data")] = 1,
    bundles: Annotated[bool, typer.Option(help="also one transaction Bundle per resident")] = True,
) -> None:
    """Deterministic, realistic lifelong records of Chongqing and Chengdu residents."""
    from ehr_service.synthetic import write

    counts = write(out, seed, residents, bundles=bundles)
    for kind, count in sorted(counts.items()):
        typer.echo(f"{kind}: {count}")
    typer.echo(f"total: {sum(counts.values())} resources")


def import_(
    paths: Annotated[list[Path], typer.Argument(help="NDJSON files, Bundles, or folders of them")],
    errors: Annotated[Path, typer.Option(help="where failed lines are listed")] = Path(
        "import-errors.txt"
    ),
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="processes validating and writing (default: CPUs on PostgreSQL, 1 on SQLite)",
        ),
    ] = None,
) -> None:
    """Import resources: new ones in batches, unchanged ones skipped (re-runs change
    nothing), changed ones as new versions; failures listed in the errors file."""
    from ehr_service.interactions.importing import Importer

    missing = [p for p in paths if not p.exists()]
    if missing:
        typer.echo(f"not found: {', '.join(map(str, missing))}", err=True)
        raise typer.Exit(2)
    with service_context("import") as ctx, errors.open("w") as failed:
        if ctx.services.catalogues is not None:  # results are marked as a server would
            ctx.services.catalogues.ensure_loaded()
        if workers is None:
            workers = (os.cpu_count() or 1) if ctx.services.database.is_postgresql else 1
        progress = Importer(
            ctx,
            failed,
            progress_reporter(),
            workers=max(1, workers),
            worker_context=import_worker_context,
        ).run(paths)
    if sys.stderr.isatty():
        typer.echo("", err=True)  # end the progress line
    typer.echo(
        f"{progress.created} new, {progress.updated} changed, {progress.unchanged} unchanged, "
        f"{progress.failed} failed" + (f" (see {errors})" if progress.failed else "")
    )
    if progress.failed:
        raise typer.Exit(1)


def export(
    out: Annotated[Path, typer.Option(help="directory for the NDJSON files (one per type)")],
    types: Annotated[list[str] | None, typer.Option("--type", help="only these types")] = None,
    since: Annotated[
        str | None, typer.Option(help="only resources changed since (instant)")
    ] = None,
    reveal_id_numbers: Annotated[
        bool, typer.Option(help="write resident ID numbers in plaintext (masked by default)")
    ] = False,
) -> None:
    """Export live resources as NDJSON for operators (the HTTP API offers $export)."""
    from ehr_service.fhir.primitives import parse_instant_param, utc_now
    from ehr_service.fhir.resource_types import R4_RESOURCE_TYPES
    from ehr_service.storage import bulk_export as store

    unknown = [t for t in types or () if t not in R4_RESOURCE_TYPES]
    if unknown:
        typer.echo(f"not resource types: {', '.join(unknown)}", err=True)
        raise typer.Exit(2)
    moment = parse_instant_param(since, "--since") if since else None
    out.mkdir(parents=True, exist_ok=True)
    with service_context("export") as ctx:
        protection = ctx.services.identity.protection
        until = utc_now()
        for resource_type in sorted(types or R4_RESOURCE_TYPES):
            count, after = 0, None
            path = out / f"{resource_type}.ndjson"
            with path.open("wb") as handle:
                while True:
                    with ctx.services.unit.read() as conn:
                        rows = store.page(
                            conn, resource_type, after=after, limit=1000, since=moment,
                            until=until, patients=None, compartment_only=False, refused_actors=(),
                        )  # fmt: skip
                    for _, content in rows:
                        handle.write(protection.present(content, reveal=reveal_id_numbers) + b"\n")
                    count += len(rows)
                    if len(rows) < 1000:
                        break
                    after = rows[-1][0]
            if count:
                typer.echo(f"{resource_type}: {count}")
            else:
                path.unlink()
        # An operator's read of every record is on the audit chain too.
        what = (
            f"types={','.join(types or ['*'])}&reveal-id-numbers={str(reveal_id_numbers).lower()}"
        )
        event = ctx.services.auditor.operator_event(ctx.caller, "export", None, query=what)
        with ctx.services.unit.write(event):
            pass
