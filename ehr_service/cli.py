"""The ``ehr-service`` command: serve, migrate, load, openapi."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import orjson
import typer

from ehr_service.config import Settings

if TYPE_CHECKING:
    from ehr_service.exchange.keys import KeyInfo, SigningKeys
    from ehr_service.exchange.partners import PartnerRegistry

app = typer.Typer(help="ehr-service: FHIR R4 lifelong health record service", no_args_is_help=True)


keys_app = typer.Typer(help="keys of the data directory", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
token_app = typer.Typer(help="bearer tokens for development", no_args_is_help=True)
app.add_typer(token_app, name="token")
audit_app = typer.Typer(help="the tamper-evident audit chain", no_args_is_help=True)
app.add_typer(audit_app, name="audit")
partner_app = typer.Typer(help="exchange partners of this region", no_args_is_help=True)
app.add_typer(partner_app, name="partner")


def _settings() -> Settings:
    return Settings()


def _batch(settings: Settings) -> Settings:
    """Settings of a long-running operator job: no statement time limit."""
    return settings.model_copy(update={"statement_timeout_ms": 0})


def _partners(action: Callable[[PartnerRegistry], object]) -> object:
    from ehr_service.exchange.partners import PartnerError, PartnerRegistry
    from ehr_service.storage.database import Database

    database = Database(_settings().effective_database_url)
    try:
        return action(PartnerRegistry(database))
    except PartnerError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    finally:
        database.dispose()


def _show(partner: object) -> None:
    from ehr_service.exchange.partners import Partner

    assert isinstance(partner, Partner)
    typer.echo(
        f"{partner.partner_id}  {partner.name}  region={partner.region}  aud={partner.audience}  "
        f"keys={','.join(sorted(partner.keys))}  types={','.join(partner.allowed_types)}  "
        f"endpoint={partner.endpoint or '-'}"
    )


@partner_app.command("add")
def partner_add(
    partner_id: str,
    name: Annotated[str, typer.Option(help="display name")],
    region: Annotated[str, typer.Option(help="region code, e.g. sichuan")],
    audience: Annotated[str, typer.Option(help="the aud of their messages to us")],
    jwks: Annotated[str, typer.Option(help="their JWKS: a file or an https URL")],
    allow: Annotated[list[str], typer.Option(help="a resource type they may send")],
    endpoint: Annotated[str | None, typer.Option(help="where we push to them")] = None,
) -> None:
    """Register a partner; its keys are fetched now and pinned."""
    _show(
        _partners(
            lambda r: r.add(
                partner_id,
                name=name,
                region=region,
                audience=audience,
                jwks=jwks,
                endpoint=endpoint,
                allowed_types=allow,
            )
        )
    )


@partner_app.command("list")
def partner_list() -> None:
    """List partners."""
    for partner in _partners(lambda r: r.list()):  # type: ignore[attr-defined]
        _show(partner)


@partner_app.command("update")
def partner_update(
    partner_id: str,
    name: Annotated[str | None, typer.Option()] = None,
    region: Annotated[str | None, typer.Option()] = None,
    audience: Annotated[str | None, typer.Option()] = None,
    jwks: Annotated[str | None, typer.Option(help="refresh keys from here (pinned)")] = None,
    allow: Annotated[list[str] | None, typer.Option(help="replace the allowed types")] = None,
    endpoint: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Change a partner; keys are refreshed (new ones added, known ones pinned)."""
    _show(
        _partners(
            lambda r: r.update(
                partner_id,
                jwks=jwks,
                name=name,
                region=region,
                audience=audience,
                endpoint=endpoint,
                allowed_types=allow,
            )
        )
    )


@partner_app.command("remove")
def partner_remove(partner_id: str) -> None:
    """Remove a partner."""
    _partners(lambda r: r.remove(partner_id))
    typer.echo(f"removed {partner_id}")


@audit_app.command("verify")
def audit_verify() -> None:
    """Walk the audit chain; name the first event altered, removed or reordered."""
    from ehr_service.audit.chain import verify
    from ehr_service.storage.database import Database

    database = Database(_settings().effective_database_url)
    try:
        verdict = verify(database)
    finally:
        database.dispose()
    if verdict.intact:
        typer.echo(f"audit chain intact: {verdict.events} events")
        return
    typer.echo(
        f"audit chain broken at event {verdict.first_bad}: {verdict.reason} "
        f"({verdict.events} events verified before it)",
        err=True,
    )
    raise typer.Exit(1)


@token_app.command("mint")
def token_mint(
    scope: Annotated[str, typer.Option(help="SMART scopes, e.g. 'system/*.cruds'")],
    patient: Annotated[str | None, typer.Option(help="patient id (patient/ scopes)")] = None,
    org: Annotated[str | None, typer.Option(help="organization of the caller")] = None,
    sub: Annotated[str, typer.Option(help="subject")] = "developer",
    ttl: Annotated[int, typer.Option(min=1, max=86_400, help="lifetime, seconds")] = 3600,
) -> None:
    """Sign a development token with the service's own key (trusted only where
    EHR_TRUST_OWN_TOKENS or a development/test environment says so)."""
    from ehr_service.security.tokens import TokenClaims, mint

    settings = _settings()
    if not settings.trusts_own_tokens:
        typer.echo("warning: this service does not trust its own tokens here", err=True)
    claims = TokenClaims(
        subject=sub, scopes=scope, patient=patient, organization=org, ttl_seconds=ttl
    )
    typer.echo(mint(settings, claims))


def _signing_keys() -> SigningKeys:
    from ehr_service.exchange.keys import SigningKeys

    return SigningKeys(_settings().signing_keys_dir)


def _key_action(action: Callable[[], KeyInfo]) -> None:
    from ehr_service.exchange.keys import KeyStateError

    try:
        info = action()
    except KeyStateError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{info.kid}  {info.alg}  {info.state}")


@keys_app.command("generate")
def keys_generate(
    alg: Annotated[str, typer.Option(help="ES256 (default) or Ed25519")] = "ES256",
) -> None:
    """Make a new exchange signing key (active if none is, else pending)."""
    _key_action(lambda: _signing_keys().generate(alg))


@keys_app.command("list")
def keys_list() -> None:
    """List the exchange signing keys: kid (RFC 7638 thumbprint), algorithm, state."""
    for info in _signing_keys().list():
        typer.echo(f"{info.kid}  {info.alg}  {info.state}  {info.created}")


@keys_app.command("rotate")
def keys_rotate(
    alg: Annotated[str, typer.Option(help="algorithm of a new key, if none is pending")] = "ES256",
) -> None:
    """Activate the pending key (or a new one); the active key retires."""
    _key_action(lambda: _signing_keys().rotate(alg))


@keys_app.command("retire")
def keys_retire(kid: str) -> None:
    """Stop signing with a key; it stays published so old messages verify."""
    _key_action(lambda: _signing_keys().retire(kid))


@keys_app.command("revoke")
def keys_revoke(kid: str) -> None:
    """Revoke a key (compromised): unpublished; its messages no longer verify."""
    _key_action(lambda: _signing_keys().revoke(kid))


@keys_app.command("rotate-data-key")
def rotate_data_key(
    batch: Annotated[int, typer.Option(min=1, help="stored versions per transaction")] = 500,
    wait: Annotated[
        bool, typer.Option(help="let running servers pick up the new key before re-sealing")
    ] = True,
) -> None:
    """Make a new data key active and re-seal every stored ID number with it."""
    import time

    from ehr_service.mpi.identity import ResidentIdentity, reseal_all
    from ehr_service.security.fieldcrypto import REFRESH_SECONDS
    from ehr_service.storage.database import Database

    settings = _settings()
    identity = ResidentIdentity.from_settings(settings)
    new = identity.protection.keyring.rotate()
    typer.echo(f"active data key: {new.kid}")
    if wait:
        time.sleep(REFRESH_SECONDS + 1)
    database = Database(settings.effective_database_url)
    try:
        count = reseal_all(database, identity.protection, batch)
    finally:
        database.dispose()
    typer.echo(f"re-sealed {count} stored versions")


@keys_app.command("data-keys")
def data_keys() -> None:
    """List the data keys (ids and dates only; never key material)."""
    from ehr_service.mpi.identity import ResidentIdentity

    identity = ResidentIdentity.from_settings(_settings())
    for kid, created, active in identity.protection.keyring.key_ids():
        typer.echo(f"{kid}  {created}  {'active' if active else 'retired'}")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="address to bind (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default 8080)")] = None,
    workers: Annotated[int, typer.Option(help="worker processes")] = 1,
) -> None:
    """Run the HTTP server (run `ehr-service migrate` first)."""
    import uvicorn

    from ehr_service.security import redaction

    settings = _settings()
    logging.basicConfig(level=settings.log_level)
    redaction.install()
    uvicorn.run(
        "ehr_service.app:create_app",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        workers=workers,
        log_level=settings.log_level.lower(),
        log_config=redaction.uvicorn_log_config(),
    )


@app.command()
def migrate(
    revision: Annotated[str, typer.Option(help="target revision")] = "head",
) -> None:
    """Create or upgrade the database schema (Alembic migrations)."""
    from ehr_service.storage.database import Database
    from ehr_service.storage.migrate import upgrade

    settings = _settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    database = Database(settings.effective_database_url)
    try:
        upgrade(database, settings.migrations_dir, revision)
    finally:
        database.dispose()
    typer.echo(f"database at {revision}: {database.engine.url.render_as_string()}")


@app.command()
def load(
    paths: Annotated[list[Path], typer.Argument(help="transaction or batch Bundle JSON files")],
) -> None:
    """Post bundle files to the database as transactions (or batches), in order."""
    from ehr_service.app import build_services
    from ehr_service.fhir.errors import FhirError
    from ehr_service.interactions.bundle import process_bundle
    from ehr_service.interactions.context import RequestContext, ReturnPreference
    from ehr_service.security.caller import SERVICE

    settings = _settings()
    services = build_services(_batch(settings))
    base_url = settings.base_url or f"http://{settings.host}:{settings.port}/fhir"
    ctx = RequestContext(
        services, base_url, "cli", prefer_return=ReturnPreference.MINIMAL, caller=SERVICE
    )
    failed = 0
    try:
        for path in paths:
            try:
                result = process_bundle(ctx, orjson.loads(path.read_bytes()))
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


@app.command()
def reindex(
    resource_type: Annotated[str | None, typer.Option("--type", help="only this type")] = None,
) -> None:
    """Rebuild the search indexes (after search parameter definitions change)."""
    from ehr_service.app import build_services
    from ehr_service.interactions.reindex import reindex as run_reindex

    services = build_services(_batch(_settings()))
    try:
        count = run_reindex(
            services, resource_type, progress=lambda n: typer.echo(f"{n} resources", err=True)
        )
    finally:
        services.database.dispose()
    typer.echo(f"reindexed {count} resources")


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
    app()


if __name__ == "__main__":
    main()
