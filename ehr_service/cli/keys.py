"""``ehr-service keys`` (the exchange signing keys and the data keys) and ``ehr-service
token`` (development bearer tokens signed with the service's own key, carrying every
claim the token verifier reads, ``security/tokens.py``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated
from urllib.parse import urlencode

import typer

from ehr_service.cli.common import (
    KID_ARGUMENT,
    audited_as,
    check_region,
    record_act,
    refuse,
    settings_from_env,
    signing_keys,
)
from ehr_service.config import Settings

if TYPE_CHECKING:
    from ehr_service.exchange.keys import KeyInfo


keys_app = typer.Typer(help="keys of the data directory", no_args_is_help=True)


def _key_action(action: Callable[[], KeyInfo], command: str) -> None:
    """A change of the exchange signing keys (security administration), audited."""
    from ehr_service.exchange.keys import KeyStateError

    try:
        info = action()
    except KeyStateError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    what = f"kid={info.kid}&alg={info.alg}&state={info.state}"
    record_act(settings_from_env(), command, query=what)
    typer.echo(f"{info.kid}  {info.alg}  {info.state}")


@keys_app.command("generate")
def keys_generate(
    alg: Annotated[
        str, typer.Option(help="ES256 (default), Ed25519 or SM2SM3 (the national suite)")
    ] = "ES256",
) -> None:
    """Make a new exchange signing key (active if its suite has none, else pending)."""
    _key_action(lambda: signing_keys().generate(alg), "keys-generate")


@keys_app.command("list")
def keys_list() -> None:
    """List the exchange signing keys: kid (RFC 7638 thumbprint), algorithm, state."""
    for info in signing_keys().list():
        typer.echo(f"{info.kid}  {info.alg}  {info.state}  {info.created}")


@keys_app.command("rotate")
def keys_rotate(
    alg: Annotated[
        str,
        typer.Option(
            help="the suite to rotate, by an algorithm of it (SM2SM3: the national one), "
            "and the algorithm of a new key if that suite has none pending"
        ),
    ] = "ES256",
) -> None:
    """Activate the suite's pending key (or a new one); its active key retires."""
    _key_action(lambda: signing_keys().rotate(alg), "keys-rotate")


@keys_app.command("retire", context_settings=KID_ARGUMENT)
def keys_retire(kid: str) -> None:
    """Stop signing with a key; it stays published so old messages verify."""
    _key_action(lambda: signing_keys().retire(kid), "keys-retire")


@keys_app.command("revoke", context_settings=KID_ARGUMENT)
def keys_revoke(kid: str) -> None:
    """Revoke a key (compromised): unpublished; its messages no longer verify."""
    _key_action(lambda: signing_keys().revoke(kid), "keys-revoke")


@keys_app.command("rotate-data-key")
def rotate_data_key(
    batch: Annotated[int, typer.Option(min=1, help="stored versions per transaction")] = 500,
    wait: Annotated[
        bool, typer.Option(help="let running servers pick up the new key before re-sealing")
    ] = True,
) -> None:
    """Make a new data key of the suite's cipher (EHR_CRYPTO_SUITE) active and re-seal
    every stored ID number and archived message with it; blind tokens and uniqueness
    claims follow the suite's scheme."""

    from ehr_service.audit.events import Auditor
    from ehr_service.exchange.archive import reseal_archive
    from ehr_service.mpi.identity import ResidentIdentity
    from ehr_service.mpi.rotation import rotate_stored
    from ehr_service.security.fieldcrypto import REFRESH_SECONDS
    from ehr_service.storage.database import Database
    from ehr_service.storage.unit_of_work import UnitOfWork

    settings = settings_from_env()
    identity = ResidentIdentity.from_settings(settings)
    protection = identity.protection
    new = protection.keyring.rotate(protection.suite.cipher)
    typer.echo(f"active data key: {new.kid} ({new.cipher})")
    if wait:
        time.sleep(REFRESH_SECONDS + 1)
    database = Database(settings.effective_database_url)
    unit = UnitOfWork(database)
    audited_as(unit, Auditor(unit), "rotate-data-key")
    try:
        done = rotate_stored(unit, protection, batch)
        messages, unopenable = reseal_archive(unit, protection.keyring)
    finally:
        database.dispose()
    typer.echo(f"re-sealed {done.resealed} stored versions")
    typer.echo(f"re-sealed {messages} archived messages")
    typer.echo(
        f"blind index ({protection.suite.blind_scheme}): {done.retokened} index rows re-tokenised, "
        f"{done.claimed} residents' claims in step, {done.dropped} claims of other schemes dropped"
    )
    problems = [f"{unopenable} archived messages could not be opened"] if unopenable else []
    problems += [f"Patient/{p}: another record claims its ID number" for p in done.conflicts]
    for problem in problems:
        typer.echo(f"warning: {problem}", err=True)
    if problems:
        raise typer.Exit(1)


@keys_app.command("data-keys")
def data_keys() -> None:
    """List the data keys (ids and dates only; never key material)."""
    from ehr_service.mpi.identity import ResidentIdentity

    identity = ResidentIdentity.from_settings(settings_from_env())
    for kid, created, active, cipher in identity.protection.keyring.key_ids():
        typer.echo(f"{kid}  {cipher}  {created}  {'active' if active else 'retired'}")


token_app = typer.Typer(help="bearer tokens for development", no_args_is_help=True)


def _check_scopes(scope: str, patient: str | None) -> None:
    from ehr_service.security.scopes import (
        DEPRECATED_SCOPES,
        SERVICE_SCOPES,
        admin_roles,
        parse_scopes,
        role_conflict,
        ungranted,
    )

    unknown = ungranted(scope)
    if not scope.split() or unknown:
        refuse(
            f"scopes this service does not know (they would grant nothing): "
            f"{' '.join(unknown) or '(none given)'}; known: patient|user|system/<Type or *>"
            f".<c r u d s, in that order> (or v1 .read .write .*), {', '.join(SERVICE_SCOPES)}"
        )
    bound = any(grant.context == "patient" for grant in parse_scopes(scope))
    if bound and not patient:
        refuse("patient/ scopes need --patient (the verifier refuses them without it)")
    if patient and not bound:
        refuse("--patient binds patient/ scopes only: add one, or leave --patient out")
    conflict = role_conflict(scope)
    if conflict is not None:
        refuse(f"refused: {conflict} (mint one token per administrator)")
    if bound and admin_roles(scope.split()):
        refuse("refused: administrator roles are not for patient-bound tokens")
    for old, new in DEPRECATED_SCOPES.items():
        if old in scope.split():
            typer.echo(f"warning: {old} is deprecated; it now means {new} only", err=True)


def _check_claims(settings: Settings, values: dict[str, str | None], region: str | None) -> None:
    from ehr_service.security.tokens import MAX_CLAIM_CHARS

    for name, value in values.items():
        if value is not None and not value.strip():
            refuse(f"--{name} is empty")
        if value is not None and len(value) > MAX_CLAIM_CHARS:
            refuse(f"--{name} is over {MAX_CLAIM_CHARS} characters (the verifier refuses it)")
    if region is not None:
        from ehr_service.storage.database import Database
        from ehr_service.storage.unit_of_work import UnitOfWork

        database = Database(settings.effective_database_url)
        try:
            check_region(UnitOfWork(database), settings, region)
        finally:
            database.dispose()


@token_app.command("mint")
def token_mint(
    scope: Annotated[str, typer.Option(help="SMART scopes, e.g. 'system/*.cruds'")],
    patient: Annotated[str | None, typer.Option(help="patient id (patient/ scopes)")] = None,
    org: Annotated[str | None, typer.Option(help="organization of the caller")] = None,
    sub: Annotated[str, typer.Option(help="subject")] = "developer",
    ttl: Annotated[int, typer.Option(min=1, max=86_400, help="lifetime, seconds")] = 3600,
    region: Annotated[
        str | None,
        typer.Option(help="the caller's region (of EHR_REGIONS, or a partner's)"),
    ] = None,
    purpose: Annotated[
        str | None,
        typer.Option(help="purpose of use, a v3 ActReason code (default TREAT), e.g. ETREAT"),
    ] = None,
    client_id: Annotated[str | None, typer.Option(help="client id (default: the subject)")] = None,
) -> None:
    """Sign a development token with the service's own key (trusted only where
    EHR_TRUST_OWN_TOKENS or a development/test environment says so)."""
    from ehr_service.security.tokens import TokenClaims, mint, purpose_code

    settings = settings_from_env()
    _check_scopes(scope, patient)
    if purpose is not None and purpose_code(purpose) is None:
        refuse(f"--purpose {purpose!r} is not a v3 ActReason code (letters and digits, 16 at most)")
    claims = {"sub": sub, "patient": patient, "org": org, "client-id": client_id}
    _check_claims(settings, claims, region)
    if not settings.trusts_own_tokens:
        typer.echo("warning: this service does not trust its own tokens here", err=True)
    token = TokenClaims(
        subject=sub, scopes=scope, patient=patient, organization=org, ttl_seconds=ttl,
        region=region, purpose=purpose_code(purpose), client_id=client_id,
    )  # fmt: skip
    signed = mint(settings, token)
    # who was given which rights, on the audit chain before the token is handed out
    named = {"sub": sub, "scope": scope, "patient": patient, "org": org, "region": region,
             "client_id": client_id, "ttl": str(ttl)}  # fmt: skip
    record_act(settings, "token-mint", query=urlencode({k: v for k, v in named.items() if v}))
    typer.echo(signed)
