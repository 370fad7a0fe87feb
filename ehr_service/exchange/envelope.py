"""The exchange envelope (docs/architecture.md §8): the exact bytes of a FHIR Bundle and a
detached JWS over those bytes (RFC 7515 compact, RFC 7797 ``b64: false``,
``crit: ["b64"]``), carried in the ``X-Exchange-Signature`` header (the international
suite: ES256, Ed25519) or ``X-Exchange-Signature-SM2`` (the national suite: SM2SM3,
``security/sm2.py``); :mod:`ehr_service.exchange.suites` carries both at once.

The protected header holds ``alg kid typ iss aud iat exp jti htm htu``; ``exp`` is
at most five minutes after ``iat``. Verification runs on the bytes received:
nothing is parsed or re-serialised before the signature has been checked.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OKPKey
from joserfc.jws import JWSRegistry
from joserfc.registry import HeaderParameter

from ehr_service.fhir import jsonio
from ehr_service.security import sm2
from ehr_service.security.sm2 import SM2Key

HEADER = "X-Exchange-Signature"
TYP = "ehr-exchange+jws"
MAX_LIFETIME = 300
ALGORITHMS = ("ES256", "Ed25519", "EdDSA", sm2.ALG)
_REQUIRED = {
    "alg": str,
    "kid": str,
    "typ": str,
    "iss": str,
    "aud": str,
    "iat": int,
    "exp": int,
    "jti": str,
    "htm": str,
    "htu": str,
}
VerifyKey = ECKey | OKPKey | SM2Key

# The envelope's own protected header members, declared to the JOSE library (which
# otherwise refuses members it does not know); jku/jwk/x5u are never honoured.
_MEMBERS = {
    "iss": HeaderParameter("sender id", "str", True),
    "aud": HeaderParameter("receiver id", "str", True),
    "iat": HeaderParameter("issued at", "int", True),
    "exp": HeaderParameter("expires at", "int", True),
    "jti": HeaderParameter("message id", "str", True),
    "htm": HeaderParameter("HTTP method", "str", True),
    "htu": HeaderParameter("HTTP target URL", "str", True),
}


# The JOSE library refuses payloads over 128 kB by default; the service's body limit
# (413 before any of this runs) is the bound that applies to messages.
MAX_PAYLOAD = 1 << 31


def _registry(alg: str) -> JWSRegistry:
    registry = JWSRegistry(header_registry=_MEMBERS, algorithms=[alg])
    registry.max_payload_length = MAX_PAYLOAD
    registry.max_header_length = 4096  # the header names the URL (htu)
    return registry


class EnvelopeError(ValueError):
    """A refused message, with a short machine-readable reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Envelope:
    """The verified protected header of a message."""

    alg: str
    kid: str
    iss: str
    aud: str
    iat: int
    exp: int
    jti: str
    htm: str
    htu: str


def sign(
    body: bytes,
    key: VerifyKey,
    *,
    kid: str,
    alg: str,
    iss: str,
    aud: str,
    htm: str,
    htu: str,
    now: float | None = None,
    lifetime: int = MAX_LIFETIME,
    jti: str | None = None,
    sm2_id: bytes = sm2.DEFAULT_ID,
) -> str:
    """The detached compact JWS (``header..signature``) over ``body`` as it is (SM2SM3
    through :mod:`ehr_service.security.sm2`, the others through joserfc)."""
    issued = int(now if now is not None else time.time())
    header: dict[str, Any] = {
        "alg": alg,
        "kid": kid,
        "typ": TYP,
        "b64": False,
        "crit": ["b64"],
        "iss": iss,
        "aud": aud,
        "iat": issued,
        "exp": issued + min(lifetime, MAX_LIFETIME),
        "jti": jti or str(uuid.uuid4()),
        "htm": htm.upper(),
        "htu": htu,
    }
    if isinstance(key, SM2Key) or alg == sm2.ALG:
        if not isinstance(key, SM2Key) or alg != sm2.ALG:
            raise ValueError("SM2 keys sign SM2SM3 only, and SM2SM3 needs an SM2 key")
        return sm2.sign_detached(header, body, key, sm2_id)
    full = jws.serialize_compact(header, body, key, registry=_registry(alg))
    return jws.detach_content(full)


def protected_header(signature: str) -> dict[str, Any]:
    parts = signature.split(".")
    if len(parts) != 3 or parts[1] != "" or len(signature) > 8192:
        raise EnvelopeError("malformed", "The signature must be a detached compact JWS")
    try:
        raw = base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4))
        header = jsonio.loads(raw)
    except (ValueError, orjson.JSONDecodeError):
        raise EnvelopeError("malformed", "The JWS header is not base64url JSON") from None
    if not isinstance(header, dict):
        raise EnvelopeError("malformed", "The JWS header is not a JSON object")
    return header


def verify(
    body: bytes,
    signature: str,
    *,
    key_for: Callable[[str, str], VerifyKey | None],
    audience: str,
    htm: str,
    htu: str,
    now: float | None = None,
    skew: int = 60,
    algorithms: tuple[str, ...] = ALGORITHMS,
    sm2_id: bytes = sm2.DEFAULT_ID,
) -> Envelope:
    """Check the signature over ``body`` and the protected header; raise
    :class:`EnvelopeError` naming the first reason to refuse. ``algorithms`` are
    the ones accepted here (one suite's, when each suite has its own header)."""
    header = protected_header(signature)
    for name, kind in _REQUIRED.items():
        value = header.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise EnvelopeError("malformed", f"The protected header needs '{name}'")
    if len(header["jti"]) > 255 or len(header["iss"]) > 255:
        raise EnvelopeError("malformed", "jti and iss are at most 255 characters")
    if header.get("b64") is not False or header.get("crit") != ["b64"]:
        raise EnvelopeError("malformed", 'The JWS must be unencoded (b64: false, crit: ["b64"])')
    if header["typ"] != TYP:
        raise EnvelopeError("malformed", f"typ must be {TYP}")
    if header["alg"] not in ALGORITHMS or header["alg"] not in algorithms:
        raise EnvelopeError("algorithm", "The algorithm is not accepted")
    key = key_for(header["iss"], header["kid"])
    if key is None:
        raise EnvelopeError(
            "unknown-key", "The signing key is unknown, retired for signing or revoked"
        )
    if isinstance(key, SM2Key) != (header["alg"] == sm2.ALG):
        raise EnvelopeError("algorithm", "The signing key does not sign with this algorithm")
    try:
        if isinstance(key, SM2Key):
            valid = sm2.verify_detached(signature, body, key, sm2_id)
        else:
            jws.deserialize_compact(signature, key, payload=body, registry=_registry(header["alg"]))
            valid = True
    except (JoseError, ValueError):
        valid = False
    if not valid:
        raise EnvelopeError("bad-signature", "The signature does not match the bytes received")
    moment = now if now is not None else time.time()
    if header["aud"] != audience:
        raise EnvelopeError("audience", "The message is addressed to another receiver")
    if header["htm"] != htm.upper() or header["htu"] != htu:
        raise EnvelopeError("target", "The message was signed for another method or URL")
    if header["iat"] > moment + skew:
        raise EnvelopeError("future", "The message is dated in the future")
    if header["exp"] <= moment - skew:
        raise EnvelopeError("expired", "The message has expired")
    if header["exp"] - header["iat"] > MAX_LIFETIME:
        raise EnvelopeError("lifetime", "exp may be at most 5 minutes after iat")
    return Envelope(**{name: header[name] for name in _REQUIRED if name != "typ"})
