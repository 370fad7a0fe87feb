"""The audit sealer (docs/architecture.md §9, "The audit chain").

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
from pathlib import Path
from typing import Any, Protocol

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jws import JWSRegistry

from ehr_service.audit import merkle
from ehr_service.fhir import jsonio
from ehr_service.fhir.primitives import format_instant, utc_now
from ehr_service.security import sm2
from ehr_service.storage import audit as audit_store
from ehr_service.storage.audit import CHAIN_HASHES, GENESIS, Link, SealHead, chain_hash
from ehr_service.storage.unit_of_work import UnitOfWork

logger = logging.getLogger(__name__)

TYP = "ehr-audit-block+jws"
BATCH = 5000


class BlockKeys(Protocol):
    """The region's signing keys (``exchange.keys.SigningKeys``)."""

    def active(self) -> tuple[Any, Any] | None: ...
    def verification_key(self, kid: str) -> Any | None: ...


STATEMENT_TYPE = "ehr-service audit block"


def statement(
    number: int,
    first: int,
    last: int,
    root: str,
    head: str,
    after: str,
    sealed: datetime,
    legacy: int,
    chain: str = "sha256",
) -> bytes:
    """What a block's signature covers: its place, its events' root, the chain (and
    the chain's hash function, when it is not SHA-256)."""
    named = {} if chain == "sha256" else {"chain": chain}
    return jsonio.dumps(
        {
            "type": STATEMENT_TYPE,
            "block": number,
            "first": first,
            "last": last,
            "root": root,  # RFC 9162 SHA-256 over the events' stored JSON, in order
            "head": head,  # the chain hash at ``last``
            "after": after,  # the chain hash before ``first``
            "sealed": format_instant(sealed),
            "legacy": legacy,  # events up to here were chained before blocks existed
            **named,  # the hash of its events' links: sm3 (GB/T 32905), else sha256
        }
    )


def chain_of(signed: object) -> str:
    """The chain hash function a block's statement names (sha256 when none)."""
    return str(signed.get("chain", "sha256")) if isinstance(signed, dict) else "sha256"


def head_disagrees(head: SealHead, last: dict[str, Any] | None) -> str:
    """Why the head row does not continue the last signed block ('' if it does):
    a sealer never extends a chain whose tail was rolled back or rewritten."""
    if last is None:
        return "" if head.block == 0 else f"the head names block {head.block}, which is gone"
    if head.block != last["number"]:
        return f"the head names block {head.block}, the last block is {last['number']}"
    if last["last_position"] > head.position:
        return "the last block seals events beyond the head"
    if last["last_position"] == head.position and last["head"] != head.hash:
        return "the head's hash is not the last block's"
    if last["last_position"] < head.position and last["last_position"] >= head.legacy:
        return "the head is ahead of the last block"
    return ""


def sign(body: bytes, kid: str, alg: str, key: Any) -> str:
    """A detached compact JWS over ``body``."""
    header = {"alg": alg, "kid": kid, "typ": TYP}
    if alg == sm2.ALG:  # a national-suite region seals with its SM2 key
        return sm2.sign_detached(header, body, key)
    full = jws.serialize_compact(header, body, key, registry=JWSRegistry(algorithms=[alg]))
    return str(jws.detach_content(full))


# The algorithm a block's key signs with, by the key's type: never the header's word.
_ALGORITHM_OF_KEY = {
    ("EC", "P-256"): "ES256",
    ("OKP", "Ed25519"): "Ed25519",
    ("EC", sm2.CRV): sm2.ALG,
}


def signature_holds(
    body: bytes,
    signature: str,
    keys: BlockKeys,
    cache: dict[str, Any],
    kid: str | None = None,
) -> str:
    """'' when ``signature`` is a valid JWS over ``body`` by one of the region's keys
    that is not revoked (``kid``: the key the block names), else why not. The
    algorithm is the key's own (ES256, Ed25519 or SM2SM3); a header that says otherwise
    (``none``, HMAC...) is refused before anything is verified."""
    try:
        encoded = signature.split(".")[0]
        header = jsonio.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
        named, alg = str(header["kid"]), str(header["alg"])
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        return "its signature is malformed"
    if header.get("typ") != TYP or (kid is not None and named != kid):
        return "its signature is not a block signature of the key it names"
    if named not in cache:
        cache[named] = keys.verification_key(named)
    key = cache[named]
    if key is None:
        return f"its signing key {named} is unknown or revoked"
    public = key.as_dict(private=False)
    expected = _ALGORITHM_OF_KEY.get((public.get("kty"), public.get("crv")))
    if expected is None or alg != expected:
        return f"its signature's algorithm is not its key's ({expected})"
    if isinstance(key, sm2.SM2Key):
        return "" if sm2.verify_detached(signature, body, key) else "its signature does not verify"
    try:
        jws.deserialize_compact(
            signature, key, payload=body, registry=JWSRegistry(algorithms=[expected])
        )
    except (JoseError, ValueError):
        return "its signature does not verify"
    return ""


def _broken(links: list[Link], contents: list[bytes], prev: str, end: int) -> str:
    """Why events chained before blocks existed do not follow on (so are not signed)."""
    for n, (link, content) in enumerate(zip(links, contents, strict=True), start=end + 1):
        if link.position != n or link.prev_hash != prev:
            return f"the event at position {n} is missing or does not follow"
        if chain_hash(prev, n, content) != link.hash:
            return f"the event at position {n} was altered"
        prev = link.hash
    return ""


class Sealer:
    def __init__(
        self,
        unit: UnitOfWork,
        keys: BlockKeys,
        *,
        interval: float = 1.0,
        anchors: Path | None = None,
        chain: str = "sha256",
    ) -> None:
        if chain not in CHAIN_HASHES:
            raise ValueError(f"unknown chain hash {chain!r}")
        self.chain = chain  # the hash of new links (EHR_CRYPTO_SUITE)
        self.unit = unit
        self.keys = keys
        self.interval = interval
        self.anchors = anchors  # where each signed statement is appended (JSON lines)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def seal(self) -> int:
        """Seal every event that can be sealed now; how many were. An idle round
        only reads (no write transaction: on SQLite, no write lock every second)."""
        with self.unit.read() as conn:
            if not audit_store.sealing_due(conn):
                return 0
        total = 0
        while True:
            sealed = self.seal_block()
            total += sealed
            if sealed < BATCH:
                return total

    def seal_block(self, limit: int = BATCH) -> int:
        """Seal up to ``limit`` events into one block; 0 when there are none, no
        key signs, another sealer is at work, or the chain's tail disagrees with
        its last signed block (then nothing is signed, and the error is logged)."""
        with self.unit.write(audited=False) as conn:
            head = audit_store.lock_head(conn)
            if head is None:
                return 0
            last = audit_store.last_block(conn)
            problem = head_disagrees(head, last)
            if problem:
                logger.error("audit events not sealed: %s (run ehr-service audit verify)", problem)
                return 0
            end = last["last_position"] if last else 0
            chain = self.chain
            if end < head.position:
                chain = "sha256"  # chained before blocks existed: closed first
                chained = audit_store.chained_unblocked(conn, end, limit)
                links = [Link(e.seq, e.position or 0, e.prev_hash or "", e.hash or "", new=False)
                         for e in chained]  # fmt: skip
                contents = [e.content for e in chained]
                problem = _broken(links, contents, last["head"] if last else GENESIS, end)
                if problem:
                    logger.error("audit events not sealed: %s (run ehr-service audit verify)",
                                 problem)  # fmt: skip
                    return 0
            else:
                rows = audit_store.unsealed(conn, limit)
                links, contents, prev = [], [], head.hash
                for n, (seq, content) in enumerate(rows, start=head.position + 1):
                    digest = chain_hash(prev, n, content, chain)
                    links.append(Link(seq, n, prev, digest))
                    contents.append(content)
                    prev = digest
            if not links:
                return 0
            active = self.keys.active()
            if active is None:
                logger.warning("audit events not sealed: this region has no active signing key")
                return 0
            info, key = active
            number, now = head.block + 1, utc_now()
            root = merkle.root(contents)
            first, final = links[0], links[-1]
            body = statement(number, first.position, final.position, root, final.hash,
                             first.prev_hash, now, head.legacy, chain)  # fmt: skip
            block = {
                "number": number,
                "first_position": first.position,
                "last_position": final.position,
                "root": root,
                "head": final.hash,
                "sealed": now,
                "kid": info.kid,
                "statement": body,
                "signature": sign(body, info.kid, info.alg, key),
            }
            audit_store.chain_block(conn, links, block)
        self._anchor(block)
        return len(links)

    def _anchor(self, block: dict[str, Any]) -> None:
        """Append the signed statement to the anchor file, outside the database: a
        database rolled back or rewritten past it is named by ``audit verify``."""
        if self.anchors is None:
            return
        line = jsonio.dumps(
            {
                "block": block["number"],
                "statement": base64.b64encode(block["statement"]).decode(),
                "signature": block["signature"],
            }
        )
        self.anchors.parent.mkdir(parents=True, exist_ok=True)
        with self.anchors.open("ab") as anchors:  # one write per line: appends never mix
            anchors.write(line + b"\n")

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
