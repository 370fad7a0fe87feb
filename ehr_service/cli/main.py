"""The ``ehr-service`` command: its groups, the server commands (serve, migrate,
openapi) and the entry point."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ehr_service.cli import data
from ehr_service.cli.audit import audit_app
from ehr_service.cli.common import configure_logging, settings_from_env
from ehr_service.cli.exchange import exchange_app
from ehr_service.cli.keys import keys_app, token_app
from ehr_service.cli.partners import partner_app
from ehr_service.cli.recognition import catalogue_app, institution_app
from ehr_service.config import Settings

app = typer.Typer(help="ehr-service: FHIR R4 lifelong health record service", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(token_app, name="token")
app.add_typer(audit_app, name="audit")
app.add_typer(partner_app, name="partner")
app.add_typer(exchange_app, name="exchange")
app.add_typer(catalogue_app, name="catalogue")
app.add_typer(institution_app, name="institution")


@app.callback()
def _every_command() -> None:
    """Settings checked and logging set once, before any command runs."""
    configure_logging(settings_from_env())


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="address to bind (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="port (default 8080)")] = None,
    workers: Annotated[int, typer.Option(min=1, help="worker processes")] = 1,
) -> None:
    """Run the HTTP server (run `ehr-service migrate` first)."""
    import uvicorn

    from ehr_service.api.server import uvicorn_options
    from ehr_service.mpi import redaction

    settings = settings_from_env()
    redaction.install()
    uvicorn.run(
        "ehr_service.app:create_app",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        workers=workers,
        log_level=settings.log_level.lower(),
        log_config=redaction.uvicorn_log_config(
            json_lines=settings.log_format == "json", level=settings.log_level
        ),
        # Our access log (one JSON line, no query string: it may carry names) replaces
        # uvicorn's in JSON mode. The protocol (httptools taking raw UTF-8 request
        # targets, with header, body and idle limits) and the shutdown drain
        # (EHR_SHUTDOWN_DRAIN_S) come from api/server.py.
        access_log=settings.log_format != "json",
        **uvicorn_options(settings),
    )


@app.command()
def migrate(
    revision: Annotated[str, typer.Option(help="target revision")] = "head",
    partitions: Annotated[
        int | None,
        typer.Option(
            help="PostgreSQL, new database: hash-partition the patient-owned tables by "
            "compartment patient id into this many partitions (docs/scale.md)"
        ),
    ] = None,
    citus: Annotated[
        bool,
        typer.Option(
            "--citus",
            help="Citus coordinator, new database with the extension and workers added: "
            "distribute the patient-owned tables by compartment patient id (docs/scale.md)",
        ),
    ] = False,
) -> None:
    """Create or upgrade the database schema (Alembic migrations)."""
    from ehr_service.storage.citus import CitusError
    from ehr_service.storage.database import Database
    from ehr_service.storage.migrate import distribute_database, partition_database, upgrade
    from ehr_service.storage.partitioning import PartitioningError

    settings = settings_from_env()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    database = Database(settings.effective_database_url)
    if citus and partitions is not None:
        typer.echo("choose --partitions or --citus, not both", err=True)
        raise typer.Exit(2)
    try:
        upgrade(database, settings.migrations_dir, revision)
        if citus:
            changed = distribute_database(database)
            typer.echo(f"laid out for Citus: {', '.join(changed) or 'already'}")
        if partitions is not None:
            changed = partition_database(database, partitions)
            typer.echo(f"partitioned into {partitions}: {', '.join(changed) or 'already'}")
    except PartitioningError as exc:
        typer.echo(f"not partitioned: {exc}", err=True)
        raise typer.Exit(2) from None
    except CitusError as exc:
        typer.echo(f"not laid out for Citus: {exc}", err=True)
        raise typer.Exit(2) from None
    finally:
        database.dispose()
    typer.echo(f"database at {revision}: {database.engine.url.render_as_string()}")


app.command()(data.load)
app.command()(data.reindex)
app.command()(data.generate)
app.command("import")(data.import_)
app.command()(data.export)


@app.command()
def openapi(
    output: Annotated[Path | None, typer.Option(help="file to write (default stdout)")] = None,
) -> None:
    """Print or write the OpenAPI document of the HTTP API."""
    from ehr_service.api.openapi_export import openapi_bytes
    from ehr_service.app import create_app

    document = openapi_bytes(create_app(Settings(database_url="sqlite://")))
    if output is None:
        typer.echo(document.decode())
    else:
        output.write_bytes(document)


def main() -> None:
    """The command: a refused input, a file that cannot be read or written, a bad
    value is one line naming it and exit 2, never a traceback."""
    from ehr_service.fhir.errors import FhirError

    try:
        app()
    except (FhirError, OSError, ValueError) as exc:
        message = " ".join(str(exc).split())[:500]
        typer.echo(f"ehr-service: {message}", err=True)
        raise SystemExit(2) from None
