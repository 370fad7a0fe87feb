"""The region's signing keys for exchanges (docs/architecture.md §8).

Keys live under ``<data dir>/keys/signing/``: one owner-only private JWK file per
key and a registry of their states. ``kid`` is the RFC 7638 thumbprint. Each
cryptographic suite (``exchange/suites.py``) has its own active key: ES256 or
Ed25519 for the international suite, SM2SM3 (``security/sm2.py``) for the national
one; rotating one suite's key leaves the other's alone.

- ``active``: signs new messages (exactly one per suite, once the suite has a key);
- ``pending``: published ahead of a rotation, not yet signing;
- ``retired``: no longer signs, still published so old messages verify;
- ``revoked``: neither signs nor verifies; not published.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from joserfc.jwk import ECKey, OKPKey

from ehr_service.exchange.suites import DEFAULT_ALG, INTERNATIONAL, NATIONAL, members, suite_of
from ehr_service.fhir import jsonio
from ehr_service.security import sm2
from ehr_service.security.fieldcrypto import write_private
from ehr_service.security.sm2 import SM2Key

ALGORITHMS = {"ES256": ("EC", "P-256"), "Ed25519": ("OKP", "Ed25519"), sm2.ALG: ("EC", sm2.CRV)}
STATES = ("active", "pending", "retired", "revoked")
SigningKey = ECKey | OKPKey | SM2Key


def _new_key(alg: str) -> SigningKey:
    if alg == "ES256":
        return ECKey.generate_key("P-256", private=True, auto_kid=True)
    if alg == "Ed25519":
        return OKPKey.generate_key("Ed25519", private=True, auto_kid=True)
    return SM2Key.generate()


def import_jwk(jwk: dict[str, Any]) -> SigningKey:
    """A JWK of one of the algorithms above (private or public)."""
    if jwk.get("crv") == sm2.CRV:
        return SM2Key.from_jwk(jwk)
    return ECKey.import_key(jwk) if jwk["kty"] == "EC" else OKPKey.import_key(jwk)


class KeyStateError(ValueError):
    """An operator asked for something the key states do not allow."""


@dataclass(frozen=True, slots=True)
class KeyInfo:
    kid: str
    alg: str
    state: str
    created: str


class SigningKeys:
    """The signing key set of this service, backed by the data directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()

    @property
    def _registry_path(self) -> Path:
        return self.directory / "registry.json"

    def _read(self) -> list[dict[str, Any]]:
        if not self._registry_path.exists():
            return []
        keys: list[dict[str, Any]] = jsonio.loads(self._registry_path.read_bytes())["keys"]
        return keys

    def _write(self, keys: list[dict[str, Any]]) -> None:
        write_private(self._registry_path, jsonio.dumps({"keys": keys}, option=orjson.OPT_INDENT_2))

    def list(self) -> list[KeyInfo]:
        return [KeyInfo(k["kid"], k["alg"], k["state"], k["created"]) for k in self._read()]

    def generate(self, alg: str = "ES256", *, state: str | None = None) -> KeyInfo:
        """A new key: active if its suite has none, else pending (publish before use)."""
        if alg not in ALGORITHMS:
            raise KeyStateError(f"alg must be one of {', '.join(ALGORITHMS)}")
        suite = suite_of(alg)
        with self._lock:
            keys = self._read()
            key = _new_key(alg)
            kid = key.thumbprint()
            write_private(
                self.directory / f"{kid}.jwk.json", jsonio.dumps(key.as_dict(private=True))
            )
            busy = any(k["state"] == "active" and suite_of(k["alg"]) == suite for k in keys)
            chosen = state or ("pending" if busy else "active")
            entry = {
                "kid": kid,
                "alg": alg,
                "state": chosen,
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
            }
            self._write([*keys, entry])
            return KeyInfo(kid, alg, chosen, entry["created"])

    def rotate(self, alg: str | None = None) -> KeyInfo:
        """Activate the newest pending key of ``alg``'s suite (or a new ``alg`` key);
        that suite's active key retires."""
        if alg is not None and alg not in ALGORITHMS:
            raise KeyStateError(f"alg must be one of {', '.join(ALGORITHMS)}")
        suite = suite_of(alg or "ES256")

        def pending(keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [k for k in keys if k["state"] == "pending" and suite_of(k["alg"]) == suite]

        with self._lock:
            waiting = pending(self._read())
        if not waiting:
            self.generate(alg or DEFAULT_ALG[suite], state="pending")
        with self._lock:
            keys = self._read()
            newest = pending(keys)[-1]
            for k in keys:
                if k["state"] == "active" and suite_of(k["alg"]) == suite:
                    k["state"] = "retired"
            newest["state"] = "active"
            self._write(keys)
            return KeyInfo(newest["kid"], newest["alg"], "active", newest["created"])

    def _set_state(self, kid: str, state: str) -> KeyInfo:
        with self._lock:
            keys = self._read()
            match = [k for k in keys if k["kid"] == kid]
            if not match:
                raise KeyStateError(f"no signing key {kid}")
            entry = match[0]
            if entry["state"] == "revoked":
                raise KeyStateError(f"{kid} is revoked for good")
            if state == "retired" and entry["state"] == "active":
                raise KeyStateError(f"{kid} is the active key: rotate to another first")
            entry["state"] = state
            self._write(keys)
            return KeyInfo(kid, entry["alg"], state, entry["created"])

    def retire(self, kid: str) -> KeyInfo:
        return self._set_state(kid, "retired")

    def revoke(self, kid: str) -> KeyInfo:
        """Revoke (a compromised key): it stops verifying too, even if active."""
        return self._set_state(kid, "revoked")

    def private_key(self, kid: str) -> SigningKey:
        return import_jwk(jsonio.loads((self.directory / f"{kid}.jwk.json").read_bytes()))

    def active(self, suite: str | None = None) -> tuple[KeyInfo, SigningKey] | None:
        """The key that signs new messages of ``suite``; without one (audit blocks), the
        international suite's, else the national one's."""
        if suite is None:
            return self.active(INTERNATIONAL) or self.active(NATIONAL)
        for info in self.list():
            if info.state == "active" and suite_of(info.alg) == suite:
                return info, self.private_key(info.kid)
        return None

    def verification_key(self, kid: str) -> SigningKey | None:
        """The public key of one of our keys, for re-verifying what we signed
        (None when unknown or revoked)."""
        for info in self.list():
            if info.kid == kid and info.state != "revoked":
                return import_jwk(self.private_key(kid).as_dict(private=False))
        return None

    def ensure_active(self, crypto_suite: str = INTERNATIONAL) -> None:
        """First run: make the region's first signing key of each suite it signs with."""
        known = {suite_of(info.alg) for info in self.list()}
        for suite in members(crypto_suite):
            if suite not in known:
                self.generate(DEFAULT_ALG[suite])

    def jwks(self) -> dict[str, Any]:
        """The public keys others verify with: active, pending and retired."""
        published = []
        for info in self.list():
            if info.state == "revoked":
                continue
            public = self.private_key(info.kid).as_dict(private=False)
            # status tells partners which keys may sign new messages (active,
            # pending) and which only verify old ones (retired).
            public.update({"kid": info.kid, "alg": info.alg, "use": "sig", "status": info.state})
            published.append(public)
        return {"keys": published}
