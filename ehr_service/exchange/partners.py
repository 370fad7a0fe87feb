"""The partner registry (DESIGN.md §8): who may exchange with this region, how to
reach them, what they may send, and the public keys their messages must verify
with. Keys are pinned: a refresh may add keys, but a known ``kid`` may never change
its key material (that would be a substitution, not a rotation)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from ehr_service.fhir.primitives import utc_now
from ehr_service.fhir.resource_types import R4_RESOURCE_TYPES
from ehr_service.storage import partners as store
from ehr_service.storage.database import Database

_ID = re.compile(r"[a-z0-9][a-z0-9\-]{0,63}")
_PUBLIC_MEMBERS = {"kty", "crv", "x", "y", "n", "e", "kid", "alg", "use"}


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


def _partner(row: dict[str, Any]) -> Partner:
    return Partner(
        row["partner_id"],
        row["name"],
        row["region"],
        row["audience"],
        row["endpoint"],
        row["jwks_url"],
        {k["kid"]: k for k in orjson.loads(row["jwks"])["keys"]},
        tuple(orjson.loads(row["allowed_types"])),
    )


def load_jwks(source: str) -> dict[str, dict[str, Any]]:
    """Public keys from a JWKS file or URL, by kid (private members refused)."""
    try:
        if source.startswith(("http://", "https://")):
            response = httpx.get(source, timeout=10.0)
            response.raise_for_status()
            document = response.json()
        else:
            document = orjson.loads(Path(source).read_bytes())
        KeySet.import_key_set(document)  # well-formed keys only
    except (httpx.HTTPError, OSError, ValueError, JoseError) as exc:
        raise PartnerError(f"the JWKS could not be read: {exc}") from None
    keys: dict[str, dict[str, Any]] = {}
    for key in document.get("keys", []):
        if "d" in key or not isinstance(key.get("kid"), str):
            raise PartnerError("a partner JWKS must hold public keys, each with a kid")
        keys[key["kid"]] = {k: v for k, v in key.items() if k in _PUBLIC_MEMBERS}
    if not keys:
        raise PartnerError("the JWKS holds no keys")
    return keys


def pinned(known: dict[str, dict[str, Any]], fresh: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Known keys plus new ones; a known kid with other key material is refused."""
    for kid, key in fresh.items():
        if kid in known and known[kid] != key:
            raise PartnerError(f"key {kid} changed its material: refused (keys are pinned)")
    return {**known, **fresh}


def _types(allowed: list[str]) -> list[str]:
    unknown = [t for t in allowed if t not in R4_RESOURCE_TYPES]
    if unknown:
        raise PartnerError(f"not resource types: {', '.join(unknown)}")
    return sorted(set(allowed))


class PartnerRegistry:
    def __init__(self, database: Database) -> None:
        self.database = database

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
    ) -> Partner:
        if not _ID.fullmatch(partner_id):
            raise PartnerError("a partner id is 1-64 lower-case letters, digits and hyphens")
        keys = load_jwks(jwks)
        with self.database.write() as conn:
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
                    "jwks": orjson.dumps({"keys": list(keys.values())}),
                    "allowed_types": orjson.dumps(_types(allowed_types)).decode(),
                    "updated": utc_now(),
                },
            )
        return self.get(partner_id)

    def update(self, partner_id: str, *, jwks: str | None = None, **fields: Any) -> Partner:
        current = self.get(partner_id)
        values: dict[str, Any] = {k: v for k, v in fields.items() if v is not None}
        if "allowed_types" in values:
            values["allowed_types"] = orjson.dumps(_types(values["allowed_types"])).decode()
        source = jwks or current.jwks_url
        if source is not None:
            keys = pinned(current.keys, load_jwks(source))
            values["jwks"] = orjson.dumps({"keys": list(keys.values())})
        values["updated"] = utc_now()
        with self.database.write() as conn:
            store.change(conn, partner_id, values)
        return self.get(partner_id)

    def remove(self, partner_id: str) -> None:
        with self.database.write() as conn:
            if not store.remove(conn, partner_id):
                raise PartnerError(f"no partner {partner_id}")

    def get(self, partner_id: str) -> Partner:
        with self.database.read() as conn:
            row = store.get(conn, partner_id)
        if row is None:
            raise PartnerError(f"no partner {partner_id}")
        return _partner(row)

    def list(self) -> list[Partner]:
        with self.database.read() as conn:
            return [_partner(r) for r in store.all_partners(conn)]
