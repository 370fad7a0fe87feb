"""The cryptographic suites of the exchange (docs/architecture.md §8; GB/T 39786-2021).

A region signs with, and accepts, the ``international`` suite (ES256 or Ed25519, in
the ``X-Exchange-Signature`` header), the ``national`` suite (SM2 with SM3,
``SM2SM3``, in ``X-Exchange-Signature-SM2``) or ``both`` (``EHR_CRYPTO_SUITE``).

Each suite has its own header, so each signature is a whole detached JWS that
verifies alone, and a partner that knows one suite reads its header and never sees
the other: a region on ``both`` stays readable by one that only knows ES256. The
signatures of one message cover the same bytes and the same claims (one ``jti``).
Between two regions the suites used are those both take: this region's setting
and the suite the partner is registered for. Each of them must be present and
verify; a message without one of them is refused (``suite``), whatever else it
carries.

A *signature set* (what is stored and passed around) is the compact JWSs of a
message joined by one space (their serialization holds none), international first:
with one suite it is exactly that suite's JWS.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from ehr_service.exchange.envelope import HEADER as HEADER
from ehr_service.exchange.envelope import Envelope, EnvelopeError, protected_header, verify
from ehr_service.security import sm2

INTERNATIONAL = "international"
NATIONAL = "national"
SUITES = (INTERNATIONAL, NATIONAL, "both")
HEADER_SM2 = "X-Exchange-Signature-SM2"
ALGORITHMS = {INTERNATIONAL: ("ES256", "Ed25519", "EdDSA"), NATIONAL: (sm2.ALG,)}
HEADERS = {INTERNATIONAL: HEADER, NATIONAL: HEADER_SM2}
DEFAULT_ALG = {INTERNATIONAL: "ES256", NATIONAL: sm2.ALG}


def members(suite: str) -> tuple[str, ...]:
    """The suites a setting names: ``both`` is the two of them."""
    if suite == "both":
        return (INTERNATIONAL, NATIONAL)
    if suite in ALGORITHMS:
        return (suite,)
    raise ValueError(f"a cryptographic suite is one of {', '.join(SUITES)}")


def suite_of(alg: str) -> str:
    return NATIONAL if alg in ALGORITHMS[NATIONAL] else INTERNATIONAL


def common(ours: str, theirs: str) -> tuple[str, ...]:
    """The suites two regions share (empty: they cannot exchange)."""
    return tuple(s for s in members(ours) if s in members(theirs))


def join(signatures: Mapping[str, str]) -> str:
    return " ".join(signatures[s] for s in (INTERNATIONAL, NATIONAL) if signatures.get(s))


def split(value: str) -> dict[str, str]:
    """A signature set by suite (by each JWS's own ``alg``)."""
    found: dict[str, str] = {}
    for part in value.split(" "):
        if part:
            alg = protected_header(part).get("alg")
            found[suite_of(alg) if isinstance(alg, str) else INTERNATIONAL] = part
    return found


def headers(value: str | None) -> dict[str, str]:
    """The HTTP headers that carry a signature set."""
    return {HEADERS[suite]: part for suite, part in split(value or "").items()}


def from_headers(get: Callable[[str], str | None]) -> dict[str, str]:
    """The signatures a request or response carries, by the header they came in."""
    return {suite: value for suite, name in HEADERS.items() if (value := get(name))}


def issuer(signatures: Mapping[str, str]) -> str:
    """The ``iss`` the signatures name (before they are verified: to find the partner)."""
    named = {protected_header(value).get("iss") for value in signatures.values()}
    if len(named) != 1 or not isinstance(next(iter(named)), str):
        raise EnvelopeError("malformed", "The signatures must name one issuer (iss)")
    return str(next(iter(named)))


def summary(value: str) -> tuple[str, str, int]:
    """(alg, kid, iat) of a signature set, each suite's alg and kid joined by a space."""
    parts = [protected_header(part) for part in split(value).values()]
    iat = parts[0].get("iat") if parts else None
    return (
        " ".join(str(p.get("alg")) for p in parts),
        " ".join(str(p.get("kid")) for p in parts),
        iat if isinstance(iat, int) else 0,
    )


def verify_set(
    body: bytes, signatures: Mapping[str, str], required: tuple[str, ...], **options: Any
) -> tuple[Envelope, str]:
    """Verify the signature of every required suite (``options`` as for
    :func:`~ehr_service.exchange.envelope.verify`); the envelope (its ``alg`` and
    ``kid`` those of each suite, joined) and the signature set of what verified."""
    if not required:
        raise EnvelopeError("suite", "The sender and this region share no cryptographic suite")
    verified: dict[str, Envelope] = {}
    for suite in required:
        value = signatures.get(suite)
        if not value:
            raise EnvelopeError(
                "suite",
                f"The {suite} cryptographic suite is required: the message needs a "
                f"{'/'.join(ALGORITHMS[suite][:2])} signature in {HEADERS[suite]}",
            )
        verified[suite] = verify(body, value, algorithms=ALGORITHMS[suite], **options)
    first, *others = verified.values()
    for other in others:
        if replace(other, alg=first.alg, kid=first.kid) != first:
            raise EnvelopeError("malformed", "The signatures name different messages")
    envelope = replace(
        first,
        alg=" ".join(e.alg for e in verified.values()),
        kid=" ".join(e.kid for e in verified.values()),
    )
    return envelope, join({suite: signatures[suite] for suite in verified})
