"""One event's inclusion proof (``AuditEvent/{id}/$inclusion-proof``,
``ehr-service audit proof``): what an auditor hands to the resident an event
concerns, so that they can check, with the region's published keys
(``/.well-known/jwks.json``) and nothing of this service, that the event is on
the sealed chain as it reads.

The proof is a FHIR Parameters resource: ``event`` (the AuditEvent's stored
bytes, base64), ``statement`` (the block's signed JSON, base64), ``signature``
(the detached compact JWS over it) and ``path`` (the RFC 9162 audit path from
the event to the statement's ``root``, as pymerkle serialises it).
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OKPKey
from sqlalchemy import Connection

from ehr_service.audit import merkle, segments
from ehr_service.audit.sealing import signature_holds
from ehr_service.fhir import jsonio
from ehr_service.security.sm2 import CRV as SM2_CRV
from ehr_service.security.sm2 import SM2Key
from ehr_service.storage import audit as audit_store
from ehr_service.storage import audit_archive as archive_store
from ehr_service.storage.audit import StoredEvent


def inclusion_proof(
    conn: Connection, seq: int, archive: Path | None = None
) -> dict[str, Any] | None:
    """The proof of event ``seq``; None until it is sealed (or if unknown). An
    archived event's comes from its segment file in ``archive``."""
    found = audit_store.block_of(conn, seq)
    if found is None and archive is not None:
        found = _archived_block_of(conn, seq, archive)
    if found is None:
        return None
    block, events = found
    index = next((n for n, e in enumerate(events) if e.seq == seq), None)
    if index is None:
        return None
    path = merkle.inclusion([e.content for e in events], index)
    return {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "event", "valueBase64Binary": _b64(events[index].content)},
            {"name": "statement", "valueBase64Binary": _b64(bytes(block["statement"]))},
            {"name": "signature", "valueString": block["signature"]},
            {"name": "path", "valueString": jsonio.dumps(path).decode()},
        ],
    }


def _archived_block_of(
    conn: Connection, seq: int, archive: Path
) -> tuple[dict[str, Any], list[StoredEvent]] | None:
    """The block an archived event was sealed in, and its events, from the segment
    file (its digest checked first: a proof is never made from an altered file)."""
    for segment in archive_store.segments_holding(conn, seq):
        path = archive / segment["file"]
        if not path.is_file() or segments.digest_of(path) != (segment["digest"],
                                                               segment["bytes"]):  # fmt: skip
            continue
        block: dict[str, Any] | None = None
        events: list[StoredEvent] = []
        try:
            for item in segments.read(path):
                if not isinstance(item, segments.ArchivedEvent):
                    if any(e.seq == seq for e in events):
                        break
                    block, events = item, []
                else:
                    events.append(item.event)
        except segments.SegmentError:
            continue
        if block is not None and any(e.seq == seq for e in events):
            return block, events
    return None


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


class _PublishedKeys:
    """The keys of a JWKS document, as the block signature check asks for them."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        self._keys = {str(k.get("kid")): k for k in jwks.get("keys", []) if isinstance(k, dict)}

    def active(self) -> None:
        return None

    def verification_key(self, kid: str) -> ECKey | OKPKey | SM2Key | None:
        key = self._keys.get(kid)
        if key is None:
            return None
        public = {k: v for k, v in key.items() if k not in ("d", "status")}
        try:
            if public.get("crv") == SM2_CRV:
                return SM2Key.from_jwk(public)
            if public.get("kty") == "EC":
                return ECKey.import_key(public)
            if public.get("kty") == "OKP":
                return OKPKey.import_key(public)
        except (ValueError, TypeError, JoseError):
            return None
        return None  # RSA, oct...: never a block key


def check(proof: dict[str, Any], jwks: dict[str, Any]) -> str:
    """'' when ``proof`` holds against the published ``jwks``, else why not."""
    values = {p.get("name"): p for p in proof.get("parameter", []) if isinstance(p, dict)}
    try:
        event = base64.b64decode(values["event"]["valueBase64Binary"], validate=True)
        statement = base64.b64decode(values["statement"]["valueBase64Binary"], validate=True)
        signature = str(values["signature"]["valueString"])
        path = jsonio.loads(values["path"]["valueString"])
        signed = jsonio.loads(statement)
    except (KeyError, TypeError, ValueError):
        return "the proof is incomplete or malformed"
    reason = signature_holds(statement, signature, _PublishedKeys(jwks), {})
    if reason:
        return f"the block statement: {reason}"
    if not isinstance(signed, dict) or not isinstance(path, dict):
        return "the proof is incomplete or malformed"
    first, last = signed.get("first"), signed.get("last")
    metadata = path.get("metadata")
    if not isinstance(metadata, dict):
        return "the proof is incomplete or malformed"
    if not (isinstance(first, int) and isinstance(last, int)) or isinstance(first, bool):
        return "the statement is not a block statement"
    if metadata.get("size") != last - first + 1:
        return "the path is not one of the block the statement signs"
    if not merkle.included(event, path, str(signed.get("root"))):
        return "the event is not in the block the statement signs"
    return ""
