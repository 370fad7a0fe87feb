"""The audit sealer (DESIGN.md §9, docs/architecture.md "Audit").

Requests insert their events in their own transactions, unchained, so no row is
locked by every request. The sealer takes the committed events in order (on
PostgreSQL only those of transactions older than every one still open, so a
late commit can never land before an event already sealed), gives each its
place on the hash chain, and closes them into a block: the Merkle root of the
block's events (``audit.merkle``), the chain hash at its end and the one before
it, signed with the region's active key as a compact JWS. One sealer works at a
time (it alone locks the head row); every server process runs one
(``EHR_AUDIT_SEAL_SECONDS``) and ``ehr-service audit seal`` runs one by hand.
"""

from __future__ import annotations

import base64
import logging
import threading
from datetime import datetime
from typing import Any, Protocol

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jws import JWSRegistry

from ehr_service.audit import merkle
from ehr_service.fhir import jsonio
from ehr_service.fhir.primitives import format_instant, utc_now
from ehr_service.storage import audit as audit_store
from ehr_service.storage.audit import Link, chain_hash
from ehr_service.storage.unit_of_work import UnitOfWork

logger = logging.getLogger(__name__)

TYP = "ehr-audit-block+jws"
BATCH = 5000


class _KeyInfo(Protocol):
    @property
    def kid(self) -> str: ...
    @property
    def alg(self) -> str: ...


class BlockKeys(Protocol):
    """The region's signing keys (``exchange.keys.SigningKeys``)."""

    def active(self) -> tuple[Any, Any] | None: ...
    def verification_key(self, kid: str) -> Any | None: ...


def statement(
    number: int, first: int, last: int, root: str, head: str, after: str, sealed: datetime
) -> bytes:
    """What a block's signature covers: its place, its events' root, the chain."""
    return jsonio.dumps(
        {
            "type": "ehr-service audit block",
            "block": number,
            "first": first,
            "last": last,
            "root": root,  # RFC 9162 SHA-256 over the events' stored JSON, in order
            "head": head,  # the chain hash at ``last``
            "after": after,  # the chain hash before ``first``
            "sealed": format_instant(sealed),
        }
    )


def sign(body: bytes, kid: str, alg: str, key: Any) -> str:
    """A detached compact JWS over ``body``."""
    header = {"alg": alg, "kid": kid, "typ": TYP}
    full = jws.serialize_compact(header, body, key, registry=JWSRegistry(algorithms=[alg]))
    return str(jws.detach_content(full))


def signature_holds(body: bytes, signature: str, keys: BlockKeys, cache: dict[str, Any]) -> str:
    """'' when ``signature`` is a valid JWS over ``body`` by one of the region's
    keys that is not revoked, else why not."""
    try:
        encoded = signature.split(".")[0]
        header = jsonio.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
        kid, alg = str(header["kid"]), str(header["alg"])
    except (ValueError, KeyError, TypeError, IndexError):
        return "its signature is malformed"
    if kid not in cache:
        cache[kid] = keys.verification_key(kid)
    if cache[kid] is None:
        return f"its signing key {kid} is unknown or revoked"
    try:
        jws.deserialize_compact(
            signature, cache[kid], payload=body, registry=JWSRegistry(algorithms=[alg])
        )
    except (JoseError, ValueError):
        return "its signature does not verify"
    return ""


class Sealer:
    def __init__(self, unit: UnitOfWork, keys: BlockKeys, *, interval: float = 1.0) -> None:
        self.unit = unit
        self.keys = keys
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def seal(self) -> int:
        """Seal every event that can be sealed now; how many were."""
        total = 0
        while True:
            sealed = self.seal_block()
            total += sealed
            if sealed < BATCH:
                return total

    def seal_block(self, limit: int = BATCH) -> int:
        """Seal up to ``limit`` events into one block; 0 when there are none, no
        key signs, or another sealer is at work."""
        with self.unit.write(audited=False) as conn:
            head = audit_store.lock_head(conn)
            if head is None:
                return 0
            rows = audit_store.unsealed(conn, limit)
            if not rows:
                return 0
            active = self.keys.active()
            if active is None:
                logger.warning("audit events not sealed: this region has no active signing key")
                return 0
            info, key = active
            links, prev = [], head.hash
            for n, (seq, content) in enumerate(rows, start=head.position + 1):
                digest = chain_hash(prev, n, content)
                links.append(Link(seq, n, prev, digest))
                prev = digest
            number, now = head.block + 1, utc_now()
            root = merkle.root([content for _, content in rows])
            body = statement(number, links[0].position, links[-1].position, root, prev,
                             head.hash, now)  # fmt: skip
            block = {
                "number": number,
                "first_position": links[0].position,
                "last_position": links[-1].position,
                "root": root,
                "head": prev,
                "sealed": now,
                "kid": info.kid,
                "statement": body,
                "signature": sign(body, info.kid, info.alg, key),
            }
            audit_store.chain_block(conn, links, block)
            return len(rows)

    # -- in the server: a daemon thread ------------------------------------------------
    def start(self) -> None:
        if self.interval > 0:
            self._thread = threading.Thread(target=self._run, name="audit-sealer", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._seal_logged()

    def _seal_logged(self) -> None:
        try:
            self.seal()
        except Exception:  # keep the sealer alive; the next round seals what is left
            logger.exception("audit sealing round failed")

    def stop(self) -> None:
        """Stop the thread, then seal what this process committed."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None
        if self.interval > 0:
            self._seal_logged()
