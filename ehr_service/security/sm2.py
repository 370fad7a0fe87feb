"""SM2 signatures with SM3 (GB/T 32918.2-2016, GB/T 35276-2017, GM/T 0003) and their
JOSE form, for the national cryptographic suite (docs/architecture.md §8).

JOSE registers no identifiers for SM2. This service uses, and publishes:

- JWS ``alg`` ``SM2SM3``: the SM2 signature of ``e = SM3(Z_A || M)``, where ``M`` is
  the JWS Signing Input (RFC 7515 §5.1; RFC 7797 when ``b64`` is false) and ``Z_A``
  hashes the signer's distinguishing identifier (default ``1234567812345678``, the
  value GB/T 35276 names), the curve and the public key (GB/T 32918.2 §5.5). The
  JWS Signature is ``r || s``, 32 bytes each, big-endian, as for ES256 (RFC 7518
  §3.4), not the DER form GB/T 35276 uses inside certificates;
- JWK ``{"kty": "EC", "crv": "SM2", "x", "y"[, "d"]}``, coordinates base64url of 32
  bytes; the ``kid`` is the RFC 7638 thumbprint (SHA-256 over ``crv kty x y``).

The curve arithmetic is GmSSL's (``gmssl-pyx``); this module hashes (``Z_A``, ``e``
with SM3 from ``cryptography``) and converts encodings, nothing more.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from gmssl_pyx import (
    GmsslInnerError,
    normalize_sm2_public_key,
    sm2_key_generate,
    sm2_sign_sm3_digest,
    sm2_verify_sm3_digest,
)

from ehr_service.fhir import jsonio

ALG = "SM2SM3"
CRV = "SM2"
DEFAULT_ID = b"1234567812345678"
# The recommended curve (GB/T 32918.5-2017): what Z_A hashes besides the key.
A = bytes.fromhex("FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC")
B = bytes.fromhex("28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93")
GX = bytes.fromhex("32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7")
GY = bytes.fromhex("BC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0")
N = int("FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123", 16)
MAX_ID_BYTES = 8191  # ENTL is the identifier's length in bits, in two bytes


class SM2KeyError(ValueError):
    """A JWK that is not a usable SM2 key."""


def sm3(data: bytes) -> bytes:
    digest = hashes.Hash(hashes.SM3())
    digest.update(data)
    return digest.finalize()


def z_a(public: bytes, ident: bytes = DEFAULT_ID) -> bytes:
    """Z_A = SM3(ENTL || ID || a || b || xG || yG || xA || yA) (GB/T 32918.2 §5.5)."""
    if not ident or len(ident) > MAX_ID_BYTES:
        raise ValueError("the SM2 distinguishing identifier is 1 to 8191 bytes")
    return sm3((len(ident) * 8).to_bytes(2, "big") + ident + A + B + GX + GY + public)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: Any, name: str) -> bytes:
    if not isinstance(text, str) or "=" in text:
        raise SM2KeyError(f"the SM2 JWK member {name} must be base64url text")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise SM2KeyError(f"the SM2 JWK member {name} is not base64url") from None


@dataclass(frozen=True, slots=True)
class SM2Key:
    """An SM2 key: the public point (x, y) and, for a private key, d."""

    x: bytes
    y: bytes
    d: bytes | None = None

    @classmethod
    def generate(cls) -> SM2Key:
        public, private = sm2_key_generate()
        return cls(public[:32], public[32:], private)

    @classmethod
    def from_jwk(cls, jwk: Mapping[str, Any]) -> SM2Key:
        if jwk.get("kty") != "EC" or jwk.get("crv") != CRV:
            raise SM2KeyError('an SM2 JWK has kty "EC" and crv "SM2"')
        x, y = _unb64(jwk.get("x"), "x"), _unb64(jwk.get("y"), "y")
        if len(x) != 32 or len(y) != 32:
            raise SM2KeyError("SM2 coordinates are 32 bytes each")
        try:
            normalize_sm2_public_key(x + y)  # the point must be on the curve
        except GmsslInnerError:
            raise SM2KeyError("the SM2 public key is not a point of the curve") from None
        d = None
        if "d" in jwk:
            d = _unb64(jwk["d"], "d")
            if len(d) != 32 or not 1 <= int.from_bytes(d, "big") < N - 1:
                raise SM2KeyError("an SM2 private key is 32 bytes in [1, n-2]")
        return cls(x, y, d)

    @property
    def public_bytes(self) -> bytes:
        return self.x + self.y

    def public(self) -> SM2Key:
        return SM2Key(self.x, self.y)

    def as_dict(self, *, private: bool = False) -> dict[str, Any]:
        jwk: dict[str, Any] = {"kty": "EC", "crv": CRV, "x": _b64(self.x), "y": _b64(self.y)}
        if private and self.d is not None:
            jwk["d"] = _b64(self.d)
        return jwk

    def thumbprint(self) -> str:
        """RFC 7638: SHA-256 over the required members, sorted, without spaces."""
        canonical = orjson.dumps(self.as_dict(), option=orjson.OPT_SORT_KEYS)
        return _b64(hashlib.sha256(canonical).digest())

    def sign(self, message: bytes, ident: bytes = DEFAULT_ID) -> bytes:
        """The signature ``r || s`` of ``message`` (its ``e`` is hashed here)."""
        if self.d is None:
            raise SM2KeyError("a public SM2 key cannot sign")
        e = sm3(z_a(self.public_bytes, ident) + message)
        r, s = decode_dss_signature(sm2_sign_sm3_digest(self.d, e))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def verify(self, message: bytes, signature: bytes, ident: bytes = DEFAULT_ID) -> bool:
        if len(signature) != 64:
            return False
        r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        if not (1 <= r < N and 1 <= s < N):
            return False
        e = sm3(z_a(self.public_bytes, ident) + message)
        try:
            return bool(sm2_verify_sm3_digest(self.public_bytes, e, encode_dss_signature(r, s)))
        except GmsslInnerError:
            return False


# -- JWS (RFC 7515 compact serialization, detached content) ------------------------
def _signing_input(encoded_header: str, header: Mapping[str, Any], payload: bytes) -> bytes:
    if header.get("b64", True) is False:  # RFC 7797: the payload as it is
        return encoded_header.encode() + b"." + payload
    return encoded_header.encode() + b"." + _b64(payload).encode()


def sign_detached(
    header: Mapping[str, Any], payload: bytes, key: SM2Key, ident: bytes = DEFAULT_ID
) -> str:
    """``header..signature``: a compact JWS whose payload travels apart."""
    if header.get("alg") != ALG:
        raise ValueError(f"an SM2 JWS has alg {ALG}")
    encoded = _b64(jsonio.dumps(dict(header)))
    return f"{encoded}..{_b64(key.sign(_signing_input(encoded, header, payload), ident))}"


def verify_detached(signature: str, payload: bytes, key: SM2Key, ident: bytes = DEFAULT_ID) -> bool:
    """Does the detached compact JWS ``signature`` hold over ``payload``?"""
    parts = signature.split(".")
    if len(parts) != 3 or parts[1] != "":
        return False
    try:
        header = jsonio.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
        raw = base64.urlsafe_b64decode(parts[2] + "=" * (-len(parts[2]) % 4))
    except (binascii.Error, ValueError):
        return False
    if not isinstance(header, dict) or header.get("alg") != ALG:
        return False
    if header.get("b64", True) is False and "b64" not in (header.get("crit") or ()):
        return False  # RFC 7797 §6: b64 false must be critical
    if _b64(raw) != parts[2]:
        return False  # one encoding of the signature only
    return key.verify(_signing_input(parts[0], header, payload), raw, ident)
