"""The ciphers, MACs and hashes of the two cryptographic suites (``EHR_CRYPTO_SUITE``).

- international: AES-256-GCM (NIST SP 800-38D), HMAC-SHA-256, SHA-256;
- national (GB/T 39786-2021): SM4-GCM (SM4 of GB/T 32907 in the GCM mode of
  SP 800-38D, as RFC 8998 uses it in TLS), HMAC-SM3 (RFC 2104 over SM3 of
  GB/T 32905) and SM3.

``both`` writes as ``national``; every suite reads what any suite wrote, so a
deployment can switch and re-seal at its own pace (``ehr-service keys
rotate-data-key``). The primitives are those of ``cryptography`` (its OpenSSL
provides SM4-GCM and SM3): nothing is implemented here but their naming.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

AES_GCM = "A256GCM"
SM4_GCM = "SM4GCM"
CIPHERS = (AES_GCM, SM4_GCM)
KEY_BYTES = {AES_GCM: 32, SM4_GCM: 16}
NONCE_BYTES = 12
TAG_BYTES = 16

HMAC_SHA256 = "hmac-sha256"
HMAC_SM3 = "hmac-sm3"
BLIND_SCHEMES = (HMAC_SHA256, HMAC_SM3)

SHA256 = "sha256"
SM3 = "sm3"
HASHES = (SHA256, SM3)


class UnopenableError(ValueError):
    """Ciphertext that does not authenticate (altered, wrong key or associated data)."""


@dataclass(frozen=True, slots=True)
class CryptoSuite:
    """What a deployment uses for new data."""

    name: str
    cipher: str  # new data keys
    blind_scheme: str  # new blind tokens
    chain_hash: str  # new audit chain links
    # Claim a resident's uniqueness under every blind scheme, always. False (national):
    # only under its own, and under the others while rows of them remain.
    claims_every_scheme: bool

    def other_schemes(self) -> tuple[str, ...]:
        return tuple(s for s in BLIND_SCHEMES if s != self.blind_scheme)


SUITES = {
    "international": CryptoSuite("international", AES_GCM, HMAC_SHA256, SHA256, True),
    "national": CryptoSuite("national", SM4_GCM, HMAC_SM3, SM3, False),
    "both": CryptoSuite("both", SM4_GCM, HMAC_SM3, SM3, True),
}


def suite(name: str) -> CryptoSuite:
    try:
        return SUITES[name]
    except KeyError:
        raise ValueError(f"unknown cryptographic suite {name!r}") from None


# -- hashes and MACs ----------------------------------------------------------------------
def digest(algorithm: str, data: bytes) -> bytes:
    if algorithm == SHA256:
        return hashlib.sha256(data).digest()
    if algorithm == SM3:
        hasher = hashes.Hash(hashes.SM3())
        hasher.update(data)
        return hasher.finalize()
    raise ValueError(f"unknown hash {algorithm!r}")


def hmac_sm3(key: bytes, data: bytes) -> bytes:
    mac = crypto_hmac.HMAC(key, hashes.SM3())
    mac.update(data)
    return mac.finalize()


def mac(scheme: str, key: bytes, data: bytes) -> bytes:
    if scheme == HMAC_SHA256:
        return hmac.new(key, data, hashlib.sha256).digest()
    if scheme == HMAC_SM3:
        return hmac_sm3(key, data)
    raise ValueError(f"unknown blind-index scheme {scheme!r}")


# The HMAC-SM3 blind-index key is derived from the one blind-index key of the key file
# (HMAC-SM3 as a PRF, one fixed label): one secret to keep, never one key in two MACs.
SM3_BLIND_LABEL = b"ehr-service blind-index key: HMAC-SM3"


def blind_key_for(scheme: str, key: bytes) -> bytes:
    return key if scheme == HMAC_SHA256 else hmac_sm3(key, SM3_BLIND_LABEL)


# -- authenticated encryption --------------------------------------------------------------
def encrypt(cipher: str, key: bytes, nonce: bytes, plaintext: bytes, associated: bytes) -> bytes:
    """ciphertext | 16-byte tag."""
    if cipher == AES_GCM:
        return AESGCM(key).encrypt(nonce, plaintext, associated)
    if cipher == SM4_GCM:
        encryptor = Cipher(algorithms.SM4(key), modes.GCM(nonce)).encryptor()
        encryptor.authenticate_additional_data(associated)
        sealed = encryptor.update(plaintext) + encryptor.finalize()
        return sealed + encryptor.tag
    raise ValueError(f"unknown cipher {cipher!r}")


def decrypt(cipher: str, key: bytes, nonce: bytes, sealed: bytes, associated: bytes) -> bytes:
    if cipher not in CIPHERS:
        raise ValueError(f"unknown cipher {cipher!r}")
    try:
        if cipher == AES_GCM:
            return AESGCM(key).decrypt(nonce, sealed, associated)
        if len(sealed) < TAG_BYTES or len(nonce) != NONCE_BYTES:
            raise UnopenableError("too short")
        body, tag = sealed[:-TAG_BYTES], sealed[-TAG_BYTES:]
        decryptor = Cipher(algorithms.SM4(key), modes.GCM(nonce, tag)).decryptor()
        decryptor.authenticate_additional_data(associated)
        return decryptor.update(body) + decryptor.finalize()
    except (InvalidTag, ValueError):
        raise UnopenableError("altered, or sealed for another record") from None


def sm4_gcm_available() -> bool:
    """Does this build's OpenSSL offer SM4-GCM (the national suite needs it)?"""
    try:
        encrypt(SM4_GCM, bytes(16), bytes(NONCE_BYTES), b"", b"")
    except Exception:  # UnsupportedAlgorithm, or a provider without SM4
        return False
    return True
