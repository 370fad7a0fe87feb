"""The partner registry (docs/architecture.md §8): who may exchange with this region, how to
reach them, what they may send, and the public keys their messages must verify
with. Keys are pinned: a refresh may add keys, but a known ``kid`` may never change
its key material (that would be a substitution, not a rotation). Each partner is
registered for the cryptographic suite it signs with and accepts
(``exchange/suites.py``): its JWKS must hold a key of each."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, OKPKey

from ehr_service.exchange.envelope import VerifyKey
from ehr_service.exchange.suites import INTERNATIONAL, NATIONAL, SUITES, members
from ehr_service.fhir import jsonio
from ehr_service.fhir.primitives import utc_now
from ehr_service.fhir.resource_types import R4_RESOURCE_TYPES
from ehr_service.security import sm2
from ehr_service.security.sm2 import SM2Key
from ehr_service.storage import partners as store
from ehr_service.storage.unit_of_work import UnitOfWork

_ID = re.compile(r"[a-z0-9][a-z0-9\-]{0,63}")
_PUBLIC_MEMBERS = {"kty", "crv", "x", "y", "n", "e", "kid", "alg", "use"}
# A published key's state (this service publishes it in its JWKS): active or pending
# keys may sign new messages; retired ones only verify old ones. A pinned key that is
# no longer published counts as revoked: it verifies nothing any more.
SIGNING_STATES = ("active", "pending")
KEY_STATES = ("active", "pending", "retired", "revoked")
REFRESH_SECONDS = 60.0


class PartnerError(ValueError):
    """An operator request the registry refuses."""


@dataclass(frozen=True, slots=True)
class Partner:
    partner_id: str
    name: str
    region: str
    audience: str
    endpoint: str | None
    jwks_url: str | None
    keys: dict[str, dict[str, Any]]  # kid -> public JWK
    allowed_types: tuple[str, ...]
    suite: str = INTERNATIONAL


def _partner(row: dict[str, Any]) -> Partner:
    return Partner(
        row["partner_id"],
        row["name"],
        row["region"],
        row["audience"],
        row["endpoint"],
        row["jwks_url"],
        {k["kid"]: k for k in jsonio.loads(row["jwks"])["keys"]},
        tuple(jsonio.loads(row["allowed_types"])),
        row.get("suite") or INTERNATIONAL,
    )


def load_jwks(source: str) -> dict[str, dict[str, Any]]:
    """Public keys from a JWKS file or URL, by kid (private members refused)."""
    try:
        if source.startswith(("http://", "https://")):
            response = httpx.get(source, timeout=10.0)
            response.raise_for_status()
            document = response.json()
        else:
            document = jsonio.loads(Path(source).read_bytes())
        listed = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(listed, list) or not all(isinstance(k, dict) for k in listed):
            raise ValueError("a JWKS is an object with a list of keys")
        for key in listed:  # well-formed keys only (SM2 ones are not joserfc's)
            if key.get("crv") == sm2.CRV:
                SM2Key.from_jwk({k: v for k, v in key.items() if k != "d"})
        others = [k for k in listed if k.get("crv") != sm2.CRV]
        if others or not listed:
            KeySet.import_key_set({"keys": others})
    except (httpx.HTTPError, OSError, ValueError, JoseError) as exc:
        raise PartnerError(f"the JWKS could not be read: {exc}") from None
    keys: dict[str, dict[str, Any]] = {}
    for key in document.get("keys", []):
        if "d" in key or not isinstance(key.get("kid"), str):
            raise PartnerError("a partner JWKS must hold public keys, each with a kid")
        public = {k: v for k, v in key.items() if k in _PUBLIC_MEMBERS}
        status = key.get("status")
        public["status"] = status if status in ("active", "pending", "retired") else "active"
        keys[key["kid"]] = public
    if not keys:
        raise PartnerError("the JWKS holds no keys")
    return keys


def _material(key: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in key.items() if k != "status"}


def pinned(known: dict[str, dict[str, Any]], fresh: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Known keys plus new ones, with the states just published; a known kid with
    other key material is refused; a known key no longer published is revoked."""
    for kid, key in fresh.items():
        if kid in known and _material(known[kid]) != _material(key):
            raise PartnerError(f"key {kid} changed its material: refused (keys are pinned)")
    gone = {kid: {**key, "status": "revoked"} for kid, key in known.items() if kid not in fresh}
    revoked = {kid: key for kid, key in known.items() if key.get("status") == "revoked"}
    return {**known, **gone, **fresh, **revoked}  # a revocation is for good


def _types(allowed: list[str]) -> list[str]:
    unknown = [t for t in allowed if t not in R4_RESOURCE_TYPES]
    if unknown:
        raise PartnerError(f"not resource types: {', '.join(unknown)}")
    return sorted(set(allowed))


def public_key(jwk: dict[str, Any]) -> VerifyKey:
    material = _material(jwk)
    if material.get("crv") == sm2.CRV:
        return SM2Key.from_jwk(material)
    return ECKey.import_key(material) if material["kty"] == "EC" else OKPKey.import_key(material)


def _suite(suite: str, keys: dict[str, dict[str, Any]]) -> str:
    """The partner's suite, refused when its JWKS holds no key to verify it with."""
    if suite not in SUITES:
        raise PartnerError(f"the suite is one of {', '.join(SUITES)}")
    usable = [k for k in keys.values() if k.get("status") != "revoked"]
    national = any(k.get("crv") == sm2.CRV for k in usable)
    if NATIONAL in members(suite) and not national:
        raise PartnerError(f"a partner of the {suite} suite needs an SM2 key in its JWKS")
    if INTERNATIONAL in members(suite) and all(k.get("crv") == sm2.CRV for k in usable):
        raise PartnerError(f"a partner of the {suite} suite needs an ES256 or Ed25519 key")
    return suite


class PartnerRegistry:
    def __init__(self, unit: UnitOfWork) -> None:
        self.unit = unit
        self._refreshed: dict[str, float] = {}  # partner -> monotonic time of last fetch
        self._ids: tuple[float, frozenset[str]] | None = None

    def is_partner_cached(self, client_id: str | None) -> bool | None:
        """``is_partner`` from the cached list; None when the list must be read."""
        if not client_id:
            return False
        if self._ids is None or time.monotonic() - self._ids[0] > 5.0:
            return None
        return client_id in self._ids[1]

    def is_partner(self, client_id: str | None) -> bool:
        """Is this a partner's client id? (cached for a few seconds)"""
        known = self.is_partner_cached(client_id)
        if known is not None:
            return known
        with self.unit.read() as conn:
            ids = frozenset(r["partner_id"] for r in store.all_partners(conn))
        self._ids = (time.monotonic(), ids)
        return client_id in ids

    def key(self, partner_id: str, kid: str, *, signing: bool) -> VerifyKey | None:
        """The partner's public key ``kid``: for a new message (``signing``) only an
        active or pending key; for an old one any key not revoked. An unknown kid
        makes one bounded refresh from the partner's JWKS URL (a rotation)."""
        try:
            partner = self.get(partner_id)
        except PartnerError:
            return None
        entry = partner.keys.get(kid)
        if entry is None and partner.jwks_url and self._may_refresh(partner_id):
            try:
                partner = self.update(partner_id)
            except PartnerError:
                return None
            entry = partner.keys.get(kid)
        if entry is None:
            return None
        allowed = SIGNING_STATES if signing else ("active", "pending", "retired")
        if entry.get("status", "active") not in allowed:
            return None
        return public_key(entry)

    def _may_refresh(self, partner_id: str) -> bool:
        now = time.monotonic()
        last = self._refreshed.get(partner_id)
        if last is not None and now - last < REFRESH_SECONDS:
            return False
        self._refreshed[partner_id] = now
        return True

    def set_key_state(self, partner_id: str, kid: str, state: str) -> Partner:
        """An operator retires or revokes a partner key (revoked is for good)."""
        if state not in ("retired", "revoked"):
            raise PartnerError("a partner key can be set retired or revoked")
        current = self.get(partner_id)
        if kid not in current.keys:
            raise PartnerError(f"partner {partner_id} has no key {kid}")
        if current.keys[kid].get("status") == "revoked":
            raise PartnerError(f"{kid} is revoked for good")
        keys = {**current.keys, kid: {**current.keys[kid], "status": state}}
        with self.unit.write() as conn:
            store.change(
                conn,
                partner_id,
                {"jwks": jsonio.dumps({"keys": list(keys.values())}), "updated": utc_now()},
            )
        return self.get(partner_id)

    def add(
        self,
        partner_id: str,
        *,
        name: str,
        region: str,
        audience: str,
        jwks: str,
        endpoint: str | None = None,
        allowed_types: list[str],
        suite: str = INTERNATIONAL,
    ) -> Partner:
        if not _ID.fullmatch(partner_id):
            raise PartnerError("a partner id is 1-64 lower-case letters, digits and hyphens")
        keys = load_jwks(jwks)
        _suite(suite, keys)
        with self.unit.write() as conn:
            if store.get(conn, partner_id) is not None:
                raise PartnerError(f"partner {partner_id} exists: use update")
            store.add(
                conn,
                {
                    "partner_id": partner_id,
                    "name": name,
                    "region": region,
                    "audience": audience,
                    "endpoint": endpoint,
                    "jwks_url": jwks if jwks.startswith(("http://", "https://")) else None,
                    "jwks": jsonio.dumps({"keys": list(keys.values())}),
                    "allowed_types": jsonio.dumps(_types(allowed_types)).decode(),
                    "suite": suite,
                    "updated": utc_now(),
                },
            )
        return self.get(partner_id)

    def update(self, partner_id: str, *, jwks: str | None = None, **fields: Any) -> Partner:
        current = self.get(partner_id)
        values: dict[str, Any] = {k: v for k, v in fields.items() if v is not None}
        if "allowed_types" in values:
            values["allowed_types"] = jsonio.dumps(_types(values["allowed_types"])).decode()
        source = jwks or current.jwks_url
        keys = current.keys
        if source is not None:
            keys = pinned(current.keys, load_jwks(source))
            values["jwks"] = jsonio.dumps({"keys": list(keys.values())})
        if "suite" in values:
            _suite(values["suite"], keys)
        values["updated"] = utc_now()
        with self.unit.write() as conn:
            store.change(conn, partner_id, values)
        return self.get(partner_id)

    def remove(self, partner_id: str) -> None:
        with self.unit.write() as conn:
            if not store.remove(conn, partner_id):
                raise PartnerError(f"no partner {partner_id}")

    def get(self, partner_id: str) -> Partner:
        with self.unit.read() as conn:
            row = store.get(conn, partner_id)
        if row is None:
            raise PartnerError(f"no partner {partner_id}")
        return _partner(row)

    def list(self) -> list[Partner]:
        with self.unit.read() as conn:
            return [_partner(r) for r in store.all_partners(conn)]
