"""``ehr-service audit``: sealing and verifying the tamper-evident audit chain."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ehr_service.cli.common import (
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
    if sealing:
        keys.ensure_active()  # first run: the region's signing key
    anchors = settings_from_env().effective_audit_anchors_file
    return Sealer(UnitOfWork(database), keys, interval=0, anchors=anchors)


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
        verdict = verify(sealer.unit, sealer.keys, anchors or sealer.anchors)
    finally:
        database.dispose()
    record_act(settings_from_env(), "audit-verify",
               query=f"intact={str(verdict.intact).lower()}&events={verdict.events}")  # fmt: skip
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

    database = Database(settings_from_env().effective_database_url)
    try:
        with _sealer(database, sealing=False).unit.read() as conn:
            proof = inclusion_proof(conn, event_id)
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
