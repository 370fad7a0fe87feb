"""``ehr-service exchange``: pushing, pulling, retrying and verifying signed messages."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer

from ehr_service.cli.common import (
    service_context,
)

if TYPE_CHECKING:
    from ehr_service.exchange.service import Exchange
    from ehr_service.interactions.context import RequestContext


exchange_app = typer.Typer(help="signed cross-region exchange", no_args_is_help=True)


@contextmanager
def _exchange(command: str) -> Iterator[tuple[Exchange, RequestContext]]:
    from ehr_service.exchange.service import Exchange

    with service_context(command) as ctx:
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
