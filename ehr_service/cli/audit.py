"""``ehr-service audit``: sealing and verifying the tamper-evident audit chain."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ehr_service.cli.common import (
    audited_as,
    batch,
    record_act,
    settings_from_env,
    signing_keys,
)
from ehr_service.fhir import jsonio

if TYPE_CHECKING:
    from ehr_service.audit.sealing import Sealer
    from ehr_service.storage.database import Database


audit_app = typer.Typer(help="the tamper-evident audit chain", no_args_is_help=True)


def _sealer(database: Database, *, sealing: bool = True) -> Sealer:
    from ehr_service.audit.sealing import Sealer
    from ehr_service.storage.unit_of_work import UnitOfWork

    keys = signing_keys()
    settings = settings_from_env()
    if sealing:
        keys.ensure_active(settings.crypto_suite)  # first run: the region's signing keys
    from ehr_service.security.ciphers import suite

    chain = suite(settings.crypto_suite).chain_hash
    anchors = settings.effective_audit_anchors_file
    return Sealer(UnitOfWork(database), keys, interval=0, anchors=anchors, chain=chain)


@audit_app.command("seal")
def audit_seal() -> None:
    """Seal every committed audit event into signed blocks now (servers do this
    every EHR_AUDIT_SEAL_SECONDS)."""
    from ehr_service.storage.database import Database

    database = Database(settings_from_env().effective_database_url)
    try:
        sealed = _sealer(database).seal()
    finally:
        database.dispose()
    record_act(settings_from_env(), "audit-seal", query=f"sealed={sealed}")
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

    database = Database(settings_from_env().effective_database_url)
    try:
        sealer = _sealer(database, sealing=seal)
        if seal:
            sealer.seal()
        archive = settings_from_env().effective_audit_archive_dir
        verdict = verify(sealer.unit, sealer.keys, anchors or sealer.anchors, archive)
    finally:
        database.dispose()
    record_act(settings_from_env(), "audit-verify",
               query=f"intact={str(verdict.intact).lower()}&events={verdict.events}")  # fmt: skip
    waiting = f", {verdict.unsealed} not sealed yet" if verdict.unsealed else ""
    if not verdict.guarded:
        typer.echo("warning: the database's audit guard (triggers refusing changes to the "
                   "trail) is not installed; as the schema's owner: ehr-service audit guard",
                   err=True)  # fmt: skip
    if verdict.intact:
        archived = f" ({verdict.archived} of them in archived segments)" if verdict.archived else ""
        typer.echo(
            f"audit chain intact: {verdict.events} events in {verdict.blocks} signed blocks"
            f"{archived}{waiting}"
        )
        return
    named = f", event {verdict.event}" if verdict.event is not None else ""
    typer.echo(
        f"audit chain broken at position {verdict.first_bad}{named}: {verdict.reason} "
        f"({verdict.events} events verified before it{waiting})",
        err=True,
    )
    raise typer.Exit(1)


@audit_app.command("guard")
def audit_guard_install() -> None:
    """Re-create the database's guard over the audit trail (triggers that refuse to
    change or delete it; migration 0013 installs them). Needs the schema's owner."""
    from ehr_service.storage.database import Database
    from ehr_service.storage.migrate import install_audit_guard

    database = Database(settings_from_env().effective_database_url)
    try:
        install_audit_guard(database)
    finally:
        database.dispose()
    record_act(settings_from_env(), "audit-guard")
    typer.echo("audit guard installed")


@audit_app.command("archive")
def audit_archive(
    older_than_days: Annotated[
        float | None,
        typer.Option(
            help="archive signed blocks sealed more than this many days ago "
            "(default: EHR_AUDIT_ONLINE_DAYS)",
            min=0,
        ),
    ] = None,
) -> None:
    """Move signed audit blocks older than the online window out of the database
    into segment files that audit verify walks (nothing is deleted)."""
    from datetime import timedelta

    from ehr_service.app import build_services
    from ehr_service.audit.archive import ArchiveError, Archiver

    settings = settings_from_env()
    days = settings.audit_online_days if older_than_days is None else older_than_days
    if older_than_days is None and not days:
        typer.echo("say how old blocks must be (--older-than-days, or EHR_AUDIT_ONLINE_DAYS)",
                   err=True)  # fmt: skip
        raise typer.Exit(2)
    services = build_services(batch(settings))
    try:
        sealer = _sealer(services.database)
        sealer.seal()
        audited_as(services.unit, services.auditor, "audit-archive")  # the act is on the chain
        archiver = Archiver(services.unit, sealer.keys, settings.effective_audit_archive_dir,
                            anchors=sealer.anchors)  # fmt: skip
        written = archiver.archive(timedelta(days=days))
    except ArchiveError as exc:
        typer.echo(f"audit events not archived: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        services.database.dispose()
    events = sum(s["events"] for s in written)
    size = sum(s["bytes"] for s in written)
    typer.echo(f"archived {events} events in {len(written)} segments ({size} bytes)")


@audit_app.command("proof")
def audit_proof(event_id: int) -> None:
    """Print one event's inclusion proof (FHIR Parameters JSON) for the resident it
    concerns; check it with ``ehr-service audit check-proof``."""
    from ehr_service.audit.proofs import inclusion_proof
    from ehr_service.storage.database import Database

    database = Database(settings_from_env().effective_database_url)
    try:
        with _sealer(database, sealing=False).unit.read() as conn:
            proof = inclusion_proof(conn, event_id, settings_from_env().effective_audit_archive_dir)
    finally:
        database.dispose()
    record_act(settings_from_env(), "audit-proof", query=f"event={event_id}")
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
        jwks = jsonio.loads(jwks_file.read_bytes()) if jwks_file else signing_keys().jwks()
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
