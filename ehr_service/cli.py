"""The ``ehr-service`` command: serve, migrate, load, openapi."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer

from ehr_service.config import Settings
from ehr_service.fhir import jsonio

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from ehr_service.audit.events import Auditor
    from ehr_service.audit.sealing import Sealer
    from ehr_service.exchange.keys import KeyInfo, SigningKeys
    from ehr_service.exchange.partners import PartnerRegistry
    from ehr_service.exchange.service import Exchange
    from ehr_service.interactions.context import RequestContext, Services
    from ehr_service.security.caller import Caller
    from ehr_service.storage.database import Database
    from ehr_service.storage.unit_of_work import UnitOfWork

app = typer.Typer(help="ehr-service: FHIR R4 lifelong health record service", no_args_is_help=True)


# A kid is a base64url thumbprint and may begin with "-": read it as the argument it is.
_KID_ARGUMENT = {"ignore_unknown_options": True}
keys_app = typer.Typer(help="keys of the data directory", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
token_app = typer.Typer(help="bearer tokens for development", no_args_is_help=True)
app.add_typer(token_app, name="token")
audit_app = typer.Typer(help="the tamper-evident audit chain", no_args_is_help=True)
app.add_typer(audit_app, name="audit")
partner_app = typer.Typer(help="exchange partners of this region", no_args_is_help=True)
app.add_typer(partner_app, name="partner")
exchange_app = typer.Typer(help="signed cross-region exchange", no_args_is_help=True)
app.add_typer(exchange_app, name="exchange")
catalogue_app = typer.Typer(help="the catalogue of recognised items", no_args_is_help=True)
app.add_typer(catalogue_app, name="catalogue")
institution_app = typer.Typer(help="institutions and their quality control", no_args_is_help=True)
app.add_typer(institution_app, name="institution")


def _settings() -> Settings:
    """The settings from the environment; a bad value is one line, not a traceback."""
    from pydantic import ValidationError

    try:
        return Settings()
    except ValidationError as exc:
        for error in exc.errors(include_url=False, include_input=False):
            name = "EHR_" + "_".join(str(part) for part in error["loc"]).upper()
            typer.echo(f"setting {name}: {error['msg']}", err=True)
        raise typer.Exit(2) from None


@app.callback()
def _every_command() -> None:
    """Settings checked and logging set once, before any command runs."""
    configure_logging(_settings())


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record comes (not the stream of
    the moment it was made: a test runner swaps it)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def configure_logging(settings: Settings) -> None:
    """Every line a command writes in one format (EHR_LOG_FORMAT: JSON lines or
    text), at EHR_LOG_LEVEL, with ID numbers masked: the service's own loggers,
    Alembic's migration lines and uvicorn's (serve configures those the same)."""
    from ehr_service.mpi.redaction import RedactIdNumbers

    root = logging.getLogger()
    root.setLevel(settings.log_level)
    if any(getattr(h, "ehr_service", False) for h in root.handlers):
        return
    handler = _StderrHandler()
    if settings.log_format == "json":
        from ehr_service.api.observability import JsonFormatter

        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactIdNumbers())
    handler.ehr_service = True  # type: ignore[attr-defined]
    root.addHandler(handler)


def _batch(settings: Settings) -> Settings:
    """Settings of a long-running operator job: no statement time limit."""
    return settings.model_copy(update={"statement_timeout_ms": 0})


def operator_caller() -> Caller:
    """The operator running this command, named by the OS account."""
    import pwd  # the account itself: LOGNAME and USER can say anything

    from ehr_service.security.caller import operator

    try:
        name = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # no account name (a container's numeric user)
        name = f"uid-{os.getuid()}"
    return operator(name)


def audited_as(unit: UnitOfWork, auditor: Auditor, command: str) -> Caller:
    """Every write transaction of ``unit`` that records no event of its own records
    this command's (an operator's act is on the audit chain, docs/architecture.md §9)."""
    from ehr_service.storage.unit_of_work import touched

    caller = operator_caller()
    unit.each_write = lambda conn: auditor.operator_event(caller, command, None, touched(conn))
    return caller


def _partners(action: Callable[[PartnerRegistry], object], command: str | None = None) -> object:
    from ehr_service.audit.events import Auditor
    from ehr_service.exchange.partners import PartnerError, PartnerRegistry
    from ehr_service.storage.database import Database
    from ehr_service.storage.unit_of_work import UnitOfWork

    database = Database(_settings().effective_database_url)
    unit = UnitOfWork(database)
    if command is not None:
        audited_as(unit, Auditor(unit), command)
    try:
        return action(PartnerRegistry(unit))
    except PartnerError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    finally:
        database.dispose()


def _show(partner: object) -> None:
    from ehr_service.exchange.partners import Partner

    assert isinstance(partner, Partner)
    keys = ",".join(
        f"{kid}:{key.get('status', 'active')}" for kid, key in sorted(partner.keys.items())
    )
    typer.echo(
        f"{partner.partner_id}  {partner.name}  region={partner.region}  aud={partner.audience}  "
        f"keys={keys}  types={','.join(partner.allowed_types)}  "
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
            ),
            "partner-add",
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
            ),
            "partner-update",
        )
    )


@partner_app.command("token")
def partner_token(
    partner_id: str,
    file: Annotated[Path, typer.Option(help="a file holding the bearer token they issued us")],
) -> None:
    """Store the bearer token this region presents to the partner (owner-only file)."""
    from ehr_service.security.fieldcrypto import write_private

    _partners(lambda r: r.get(partner_id))
    token = file.read_text().strip()
    if token.count(".") != 2:
        typer.echo("the file does not hold a JWT", err=True)
        raise typer.Exit(1)
    target = _settings().data_dir / "keys" / "partner-tokens" / f"{partner_id}.jwt"
    write_private(target, token.encode())
    typer.echo(f"token stored for {partner_id}")


@partner_app.command("key", context_settings=_KID_ARGUMENT)
def partner_key(
    partner_id: str,
    kid: str,
    state: Annotated[str, typer.Option(help="retired (verifies old messages only) or revoked")],
) -> None:
    """Retire or revoke one of a partner's keys (a revoked key verifies nothing)."""
    _show(_partners(lambda r: r.set_key_state(partner_id, kid, state), "partner-key"))


@partner_app.command("remove")
def partner_remove(partner_id: str) -> None:
    """Remove a partner."""
    _partners(lambda r: r.remove(partner_id), "partner-remove")
    typer.echo(f"removed {partner_id}")


def _sealer(database: Database, *, sealing: bool = True) -> Sealer:
    from ehr_service.audit.sealing import Sealer
    from ehr_service.storage.unit_of_work import UnitOfWork

    keys = _signing_keys()
    if sealing:
        keys.ensure_active()  # first run: the region's signing key
    anchors = _settings().effective_audit_anchors_file
    return Sealer(UnitOfWork(database), keys, interval=0, anchors=anchors)


@audit_app.command("seal")
def audit_seal() -> None:
    """Seal every committed audit event into signed blocks now (servers do this
    every EHR_AUDIT_SEAL_SECONDS)."""
    from ehr_service.storage.database import Database

    database = Database(_settings().effective_database_url)
    try:
        sealed = _sealer(database).seal()
    finally:
        database.dispose()
    typer.echo(f"sealed {sealed} events")


@audit_app.command("verify")
def audit_verify(
    seal: Annotated[bool, typer.Option(help="seal what is committed first")] = True,
    anchors: Annotated[
        Path | None,
        typer.Option(help="anchor file of signed statements (default: the data directory's)"),
    ] = None,
) -> None:
    """Walk the sealed audit chain and its signed blocks; name the first event or
    block altered, removed or reordered, or whose signature fails."""
    from ehr_service.audit.chain import verify
    from ehr_service.storage.database import Database

    database = Database(_settings().effective_database_url)
    try:
        sealer = _sealer(database, sealing=seal)
        if seal:
            sealer.seal()
        verdict = verify(sealer.unit, sealer.keys, anchors or sealer.anchors)
    finally:
        database.dispose()
    waiting = f", {verdict.unsealed} not sealed yet" if verdict.unsealed else ""
    if verdict.intact:
        typer.echo(
            f"audit chain intact: {verdict.events} events in {verdict.blocks} signed blocks"
            f"{waiting}"
        )
        return
    named = f", event {verdict.event}" if verdict.event is not None else ""
    typer.echo(
        f"audit chain broken at position {verdict.first_bad}{named}: {verdict.reason} "
        f"({verdict.events} events verified before it{waiting})",
        err=True,
    )
    raise typer.Exit(1)


@audit_app.command("proof")
def audit_proof(event_id: int) -> None:
    """Print one event's inclusion proof (FHIR Parameters JSON) for the resident it
    concerns; check it with ``ehr-service audit check-proof``."""
    from ehr_service.audit.proofs import inclusion_proof
    from ehr_service.storage.database import Database

    database = Database(_settings().effective_database_url)
    try:
        with _sealer(database, sealing=False).unit.read() as conn:
            proof = inclusion_proof(conn, event_id)
    finally:
        database.dispose()
    if proof is None:
        typer.echo(f"event {event_id} is not known or not sealed yet", err=True)
        raise typer.Exit(1)
    typer.echo(jsonio.dumps(proof).decode())


@audit_app.command("check-proof")
def audit_check_proof(
    proof_file: Path,
    jwks_file: Annotated[
        Path | None, typer.Option(help="the region's published JWKS (default: this region's)")
    ] = None,
) -> None:
    """Check an inclusion proof against the region's published keys only."""
    from ehr_service.audit.proofs import check

    try:
        proof = jsonio.loads(proof_file.read_bytes())
        jwks = jsonio.loads(jwks_file.read_bytes()) if jwks_file else _signing_keys().jwks()
    except (OSError, ValueError) as exc:
        typer.echo(f"cannot read the proof or the keys: {exc}", err=True)
        raise typer.Exit(1) from None
    reason = "not JSON objects"
    if isinstance(proof, dict) and isinstance(jwks, dict):
        reason = check(proof, jwks)
    if reason:
        typer.echo(f"proof does not hold: {reason}", err=True)
        raise typer.Exit(1)
    typer.echo("proof holds: the event is in a block signed by the region")


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


@contextmanager
def _exchange(command: str) -> Iterator[tuple[Exchange, RequestContext]]:
    from ehr_service.exchange.service import Exchange

    with _service_context(command) as ctx:
        yield Exchange(ctx.services), ctx


@exchange_app.command("push")
def exchange_push(
    partner: Annotated[str | None, typer.Option(help="only this partner")] = None,
) -> None:
    """Deliver due outbox rows to partner endpoints, signed; failures back off and
    end dead-lettered after the last attempt."""
    with _exchange("exchange-push") as (exchange, _ctx):
        report = exchange.outbound.push(partner_id=partner)
    typer.echo(f"sent {report.sent}, will retry {report.failed}, dead-lettered {report.dead}")
    for error in report.errors:
        typer.echo(f"  {error}", err=True)
    if report.errors:
        raise typer.Exit(1)


@exchange_app.command("pull")
def exchange_pull(partner: str) -> None:
    """Read a partner's signed feed from where we left off, and ingest it."""
    from ehr_service.exchange.partners import PartnerError
    from ehr_service.fhir.errors import FhirError

    with _exchange("exchange-pull") as (exchange, ctx):
        try:
            count = exchange.outbound.pull(partner, ctx)
        except (PartnerError, FhirError, ValueError) as exc:
            typer.echo(f"pull from {partner} failed: {exc}", err=True)
            raise typer.Exit(1) from None
    typer.echo(f"ingested {count} results from {partner}")


@exchange_app.command("status")
def exchange_status() -> None:
    """Outbox rows per partner and state; the dead-lettered ones with their error."""
    from ehr_service.storage import exchange as store

    with _exchange("exchange-status") as (exchange, _ctx), exchange.services.unit.read() as conn:
        counts = store.status_counts(conn)
        dead = store.dead_rows(conn)
    if not counts:
        typer.echo("outbox empty")
    for partner_id, state, rows, oldest in counts:
        since = oldest.isoformat(timespec="seconds") if oldest else "-"
        typer.echo(f"{partner_id}  {state}  {rows}  oldest {since}")
    for row in dead:
        typer.echo(
            f"dead  {row['partner_id']}  {row['res_type']}/{row['res_id']}/_history/"
            f"{row['version_id']}  attempts={row['attempts']}  {row['last_error'] or ''}"
        )


@exchange_app.command("retry")
def exchange_retry(
    partner: Annotated[str | None, typer.Option(help="only this partner")] = None,
) -> None:
    """Put dead-lettered rows back in the queue (once the partner is fixed)."""
    from ehr_service.fhir.primitives import utc_now
    from ehr_service.storage import exchange as store

    with _exchange("exchange-retry") as (exchange, _ctx), exchange.services.unit.write() as conn:
        count = store.revive_dead(conn, partner, utc_now())
    typer.echo(f"{count} rows queued again")


@exchange_app.command("verify")
def exchange_verify(
    issuer: Annotated[str | None, typer.Option(help="only messages of this sender")] = None,
    jti: Annotated[str | None, typer.Option(help="only this message (with --issuer)")] = None,
) -> None:
    """Verify stored messages again (one, one sender's, or all) against the key
    history; report each that fails."""
    if jti is not None and issuer is None:
        typer.echo("--jti needs --issuer", err=True)
        raise typer.Exit(2)
    with _exchange("exchange-verify") as (exchange, _ctx):
        verdicts = exchange.archive.verify_all(issuer=issuer, jti=jti)
    failed = [v for v in verdicts if not v.ok]
    for verdict in failed:
        typer.echo(f"FAILED {verdict.direction} {verdict.issuer}/{verdict.jti}: {verdict.reason}")
    typer.echo(f"{len(verdicts)} messages checked, {len(failed)} failed")
    if failed or (jti is not None and not verdicts):
        raise typer.Exit(1)


def operator_context(services: Services, command: str) -> RequestContext:
    """The context of an operator's command: its writes are audited as that command."""
    from ehr_service.interactions.context import RequestContext

    settings = services.settings
    base_url = settings.base_url or f"http://{settings.host}:{settings.port}/fhir"
    caller = audited_as(services.unit, services.auditor, command)
    return RequestContext(services, base_url, "cli", caller=caller, interaction=f"cli:{command}")


def _import_worker_context() -> RequestContext:
    """The context of an import worker process (it lives as long as the process)."""
    from ehr_service.app import build_services

    return operator_context(build_services(_batch(_settings())), "import")


@contextmanager
def _service_context(command: str) -> Iterator[RequestContext]:
    from ehr_service.app import build_services

    services = build_services(_batch(_settings()))
    try:
        yield operator_context(services, command)
    finally:
        services.database.dispose()


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
    with _service_context("catalogue-load") as ctx:
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

    with _service_context("catalogue-list") as ctx, ctx.services.unit.read() as conn:
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
    region: Annotated[str, typer.Option(help="chongqing or sichuan")],
    level: Annotated[str | None, typer.Option(help="e.g. 3A (三级甲等)")] = None,
) -> None:
    """Create or update Organization/ID with its region and level."""
    from ehr_service.recognition.institutions import LEVEL_URL, REGION_URL

    document: dict[str, Any] = {"resourceType": "Organization", "id": org_id, "name": name,
                                "active": True}  # fmt: skip
    with _service_context("institution-add") as ctx:
        document = (_find_organization(ctx, org_id) or document) | {"name": name}
        others = [
            e
            for e in document.get("extension") or ()
            if e.get("url") not in {REGION_URL, LEVEL_URL}
        ]
        extensions = [{"url": REGION_URL, "valueCode": region}]
        if level:
            extensions.append({"url": LEVEL_URL, "valueCode": level})
        document["extension"] = extensions + others
        _store_organization(ctx, document)
    typer.echo(f"Organization/{org_id}  {name}  region={region}  level={level or '-'}")


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

    for value in (start, end):
        try:
            date.fromisoformat(value)
        except ValueError:
            typer.echo(f"not a date: {value}", err=True)
            raise typer.Exit(2) from None
    with _service_context("institution-qc") as ctx:
        document = _organization(ctx, org_id)
        record = quality_control_extension(category, scheme, cycle, passed, start, end)
        document["extension"] = [*(document.get("extension") or ()), record]
        _store_organization(ctx, document)
    typer.echo(f"Organization/{org_id}: {category} {cycle} {'passed' if passed else 'failed'}")


@institution_app.command("show")
def institution_show(org_id: str) -> None:
    """An institution's region, level and quality-control records."""
    from ehr_service.recognition.institutions import institution_of

    with _service_context("institution-show") as ctx:
        institution = institution_of(f"Organization/{org_id}", _organization(ctx, org_id))
    typer.echo(
        f"{institution.reference}  {institution.name or '-'}  region={institution.region or '-'}"
        f"  level={institution.level or '-'}"
    )
    for qc in institution.quality_control:
        typer.echo(
            f"  {qc.category}  {qc.scheme or '-'}  {qc.cycle or '-'}  "
            f"{'passed' if qc.passed else 'failed'}  {qc.start or '-'} .. {qc.end or '-'}"
        )


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


@keys_app.command("retire", context_settings=_KID_ARGUMENT)
def keys_retire(kid: str) -> None:
    """Stop signing with a key; it stays published so old messages verify."""
    _key_action(lambda: _signing_keys().retire(kid))


@keys_app.command("revoke", context_settings=_KID_ARGUMENT)
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

    from ehr_service.audit.events import Auditor
    from ehr_service.mpi.identity import ResidentIdentity, reseal_all
    from ehr_service.security.fieldcrypto import REFRESH_SECONDS
    from ehr_service.storage.database import Database
    from ehr_service.storage.unit_of_work import UnitOfWork

    settings = _settings()
    identity = ResidentIdentity.from_settings(settings)
    new = identity.protection.keyring.rotate()
    typer.echo(f"active data key: {new.kid}")
    if wait:
        time.sleep(REFRESH_SECONDS + 1)
    database = Database(settings.effective_database_url)
    unit = UnitOfWork(database)
    audited_as(unit, Auditor(unit), "rotate-data-key")
    try:
        count = reseal_all(unit, identity.protection, batch)
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
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="port (default 8080)")] = None,
    workers: Annotated[int, typer.Option(min=1, help="worker processes")] = 1,
) -> None:
    """Run the HTTP server (run `ehr-service migrate` first)."""
    import uvicorn

    from ehr_service.api.server import uvicorn_options
    from ehr_service.mpi import redaction

    settings = _settings()
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
        # uvicorn's in JSON mode. Header, body and idle limits, and the shutdown drain
        # (EHR_SHUTDOWN_DRAIN_S), come from api/server.py.
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
) -> None:
    """Create or upgrade the database schema (Alembic migrations)."""
    from ehr_service.storage.database import Database
    from ehr_service.storage.migrate import partition_database, upgrade
    from ehr_service.storage.partitioning import PartitioningError

    settings = _settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    database = Database(settings.effective_database_url)
    try:
        upgrade(database, settings.migrations_dir, revision)
        if partitions is not None:
            changed = partition_database(database, partitions)
            typer.echo(f"partitioned into {partitions}: {', '.join(changed) or 'already'}")
    except PartitioningError as exc:
        typer.echo(f"not partitioned: {exc}", err=True)
        raise typer.Exit(2) from None
    finally:
        database.dispose()
    typer.echo(f"database at {revision}: {database.engine.url.render_as_string()}")


@app.command()
def load(
    paths: Annotated[list[Path], typer.Argument(help="transaction or batch Bundle JSON files")],
) -> None:
    """Post bundle files to the database as transactions (or batches), in order."""
    from dataclasses import replace

    from ehr_service.app import build_services
    from ehr_service.fhir.errors import FhirError
    from ehr_service.interactions.bundle import process_bundle
    from ehr_service.interactions.context import ReturnPreference

    services = build_services(_batch(_settings()))
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


@app.command()
def reindex(
    resource_type: Annotated[str | None, typer.Option("--type", help="only this type")] = None,
) -> None:
    """Rebuild the search indexes (after search parameter definitions change)."""
    from ehr_service.app import build_services
    from ehr_service.interactions.reindex import reindex as run_reindex

    services = build_services(_batch(_settings()))
    operator_context(services, "reindex")  # its writes are audited as the operator's
    try:
        count = run_reindex(
            services, resource_type, progress=lambda n: typer.echo(f"{n} resources", err=True)
        )
    finally:
        services.database.dispose()
    typer.echo(f"reindexed {count} resources")


@app.command()
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


@app.command("import")
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
    with _service_context("import") as ctx, errors.open("w") as failed:
        if ctx.services.catalogues is not None:  # results are marked as a server would
            ctx.services.catalogues.ensure_loaded()
        if workers is None:
            workers = (os.cpu_count() or 1) if ctx.services.database.is_postgresql else 1
        progress = Importer(
            ctx,
            failed,
            _progress_reporter(),
            workers=max(1, workers),
            worker_context=_import_worker_context,
        ).run(paths)
    if sys.stderr.isatty():
        typer.echo("", err=True)  # end the progress line
    typer.echo(
        f"{progress.created} new, {progress.updated} changed, {progress.unchanged} unchanged, "
        f"{progress.failed} failed" + (f" (see {errors})" if progress.failed else "")
    )
    if progress.failed:
        raise typer.Exit(1)


@app.command()
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
    with _service_context("export") as ctx:
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


def _progress_reporter() -> Callable[[Any], None]:
    """One line rewritten in place on a terminal; into a file or a log, a plain
    line every 10 s (never carriage-return frames)."""
    if sys.stderr.isatty():
        return lambda p: typer.echo("\r" + p.line(), err=True, nl=False)
    last = [0.0]

    def to_log(progress: Any) -> None:
        now = time.monotonic()
        if now - last[0] >= 10.0:
            last[0] = now
            typer.echo(progress.line(), err=True)

    return to_log


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


if __name__ == "__main__":
    main()
