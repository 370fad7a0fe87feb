"""``ehr-service partner``: the exchange partners of this region."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ehr_service.cli.common import (
    KID_ARGUMENT,
    audited_as,
    record_act,
    settings_from_env,
)

if TYPE_CHECKING:
    from ehr_service.exchange.partners import PartnerRegistry


partner_app = typer.Typer(help="exchange partners of this region", no_args_is_help=True)


def _partners(action: Callable[[PartnerRegistry], object], command: str | None = None) -> object:
    from ehr_service.audit.events import Auditor
    from ehr_service.exchange.partners import PartnerError, PartnerRegistry
    from ehr_service.storage.database import Database
    from ehr_service.storage.unit_of_work import UnitOfWork

    database = Database(settings_from_env().effective_database_url)
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
        f"keys={keys}  suite={partner.suite}  types={','.join(partner.allowed_types)}  "
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
    suite: Annotated[
        str, typer.Option(help="their cryptographic suite: international, national or both")
    ] = "international",
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
                suite=suite,
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
    suite: Annotated[
        str | None, typer.Option(help="their cryptographic suite: international, national, both")
    ] = None,
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
                suite=suite,
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
    settings = settings_from_env()
    target = settings.data_dir / "keys" / "partner-tokens" / f"{partner_id}.jwt"
    write_private(target, token.encode())
    record_act(settings, "partner-token", query=f"partner={partner_id}")
    typer.echo(f"token stored for {partner_id}")


@partner_app.command("key", context_settings=KID_ARGUMENT)
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
