"""Verify the audit chain (``ehr-service audit verify``): walk the sealed events
in chain order and their signed blocks, and name the first event or block that
was altered, removed or reordered, or whose signature fails."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection

from ehr_service.audit import merkle, segments
from ehr_service.audit.events import acted_on, kind_of, organization_of
from ehr_service.audit.sealing import (
    STATEMENT_TYPE,
    BlockKeys,
    chain_of,
    head_disagrees,
    signature_holds,
)
from ehr_service.fhir import jsonio
from ehr_service.fhir.primitives import format_instant
from ehr_service.storage import audit as audit_store
from ehr_service.storage import audit_archive as archive_store
from ehr_service.storage import audit_guard
from ehr_service.storage.audit import CHAIN_HASHES, GENESIS, SealHead, StoredEvent, chain_hash
from ehr_service.storage.unit_of_work import UnitOfWork


@dataclass(frozen=True, slots=True)
class Verdict:
    events: int  # sealed events verified
    first_bad: int | None = None  # chain position of the first break
    reason: str = ""
    unsealed: int = 0  # committed, not sealed yet
    blocks: int = 0  # blocks verified
    event: int | None = None  # the id of the event at fault, where one is named
    archived: int = 0  # events verified from archived segment files (the first ones)
    guarded: bool = True  # the database's triggers over the trail are in place

    @property
    def intact(self) -> bool:
        return self.first_bad is None


def _columns_disagree(event: StoredEvent, patients: set[str]) -> str | None:
    """The queryable copies (columns, access rows) must say what the hashed JSON says."""
    content = jsonio.loads(event.content)
    agent = (content.get("agent") or [{}])[0]
    subject = ((agent.get("who") or {}).get("identifier") or {}).get("value")
    if (
        content.get("id") != str(event.seq)
        or content.get("outcome") != event.outcome
        or subject != event.subject
        or content.get("recorded") != format_instant(event.recorded)
    ):
        return "its columns were altered"
    named = {  # the entities in the patient role (not the resource acted on)
        str(e["what"]["reference"]).removeprefix("Patient/")
        for e in content.get("entity") or ()
        if (e.get("role") or {}).get("code") == "1" and "what" in e
    }
    if named != patients:
        return "its record of whose data it touched was altered"
    # What the AuditEvent search filters on must be what was hashed too.
    if event.entity != acted_on(content) or event.kind != kind_of(content, event.kind):
        return "its columns were altered"
    if event.organization != organization_of(content):
        return "its columns were altered"
    return None


def verify(
    unit: UnitOfWork,
    keys: BlockKeys | None = None,
    anchors: Path | None = None,
    archive: Path | None = None,
) -> Verdict:
    """Walk the sealed chain in order, and its blocks: the first event or block
    that was altered, removed or reordered, or whose signature fails. Without
    ``keys`` signatures are not checked (the rest is); ``anchors``: the file the
    sealers appended their signed statements to, outside the database (a block
    it names must be in the database as signed); ``archive``: the directory of
    the archived segment files, walked first (a segment the database records
    must be there, whole). One snapshot throughout: a sealer or archiver at work
    meanwhile changes nothing the walk sees."""
    with unit.read(snapshot=True) as conn:
        head = audit_store.head(conn)
        walker = ChainWalk(keys, head.legacy, audit_store.blocks(conn))
        for segment in archive_store.segments(conn):
            walker.segment(segment, archive)
            if walker.problem is not None:
                break
        if walker.problem is None:
            accesses = _Accesses(conn)
            for event in audit_store.walk(conn, after=walker.count):
                walker.event(event, accesses.of(event.seq))
                if walker.problem is not None:
                    break
        if walker.problem is None:
            walker.end(head, audit_store.last_block(conn))
        if walker.problem is None and anchors is not None:
            walker.problem = _anchors_problem(conn, anchors)
        unsealed = audit_store.count_unsealed(conn)
        archived = archive_store.archived_through(conn)
        guarded = audit_guard.installed(conn)
    problem = walker.problem
    if problem is not None:
        return Verdict(walker.count, problem[0], problem[1], unsealed, walker.blocks, problem[2],
                       archived, guarded)  # fmt: skip
    return Verdict(walker.count, unsealed=unsealed, blocks=walker.blocks, archived=archived,
                   guarded=guarded)  # fmt: skip


class _Accesses:
    """Whose records the events touched, fetched a thousand ids at a time."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.window = (1, 0)
        self.touched: dict[int, set[str]] = {}

    def of(self, seq: int) -> set[str]:
        if not self.window[0] <= seq <= self.window[1]:
            self.window = (seq, seq + 999)
            self.touched = audit_store.accesses(self.conn, *self.window)
        return self.touched.get(seq, set())


def _anchors_problem(conn: Connection, anchors: Path) -> tuple[int, str, int | None] | None:
    """A block or segment the anchor file names that the database lost or changed
    (the database's are streamed, the anchors held: the file is the smaller)."""
    if not anchors.exists():
        return None
    anchored: dict[tuple[str, int], tuple[bytes, object]] = {}
    for line in anchors.read_bytes().splitlines():
        try:
            anchor = jsonio.loads(line)
            statement = base64.b64decode(anchor["statement"], validate=True)
            kind = "segment" if "segment" in anchor else "block"
            anchored[(kind, int(anchor[kind]))] = (statement, anchor.get("signature"))
        except (ValueError, KeyError, TypeError, AttributeError):
            return (0, f"the anchor file {anchors.name} holds a line that is not an anchor", None)
    for kind, rows in (("block", audit_store.blocks(conn)),
                       ("segment", archive_store.segments(conn))):  # fmt: skip
        for row in rows:
            held = anchored.pop((kind, row["number"]), None)
            if held is not None and held != (bytes(row["statement"]), row["signature"]):
                return _unanchored(kind, row["number"], row["first_position"])
    if anchored:  # anchored, and no longer in the database at all
        kind, number = min(anchored)
        return _unanchored(kind, number, 0)
    return None


def _unanchored(kind: str, number: int, first: int) -> tuple[int, str, int | None]:
    return (first, f"{kind} {number}, signed and anchored outside the database, is gone or "
            "altered", None)  # fmt: skip


class ChainWalk:
    """The state of one walk: the chain so far and the block being checked. A walk
    may start inside the chain (``start``: the last position already checked, its
    hash, and the last block), as the archiver's check of a new segment does."""

    def __init__(
        self,
        keys: BlockKeys | None,
        legacy: int,
        blocks: Iterator[dict[str, Any]],
        start: tuple[int, str, int] = (0, GENESIS, 0),
    ) -> None:
        self.keys = keys
        self.legacy = legacy
        self.count, self.prev, self.blocks = start
        self.last_block_end = self.count
        self.pending = blocks
        self.block: dict[str, Any] | None = next(self.pending, None)
        self.leaves: list[bytes] = []
        self.block_after = self.prev
        self.key_cache: dict[str, Any] = {}
        self.chain_of_block: tuple[int, str] = (0, "sha256")  # (block number, its chain hash)
        self.problem: tuple[int, str, int | None] | None = None
        self.segments = 0

    def event(self, event: StoredEvent, patients: set[str]) -> None:
        position = self.count + 1
        if event.position != position:
            self.problem = (position, f"the event at position {position} is missing or moved",
                            None)  # fmt: skip
            return
        if event.prev_hash != self.prev:
            self.problem = (position, "it does not follow the event before it", event.seq)
            return
        if chain_hash(self.prev, position, event.content, self._chain(position)) != event.hash:
            self.problem = (position, "its content or hash was altered", event.seq)
            return
        reason = _columns_disagree(event, patients)
        if reason:
            self.problem = (position, reason, event.seq)
            return
        if self.block is not None and position == self.block["first_position"]:
            self.block_after = self.prev  # the chain hash the block's statement follows
        self.count, self.prev = position, event.hash
        self._in_block(event)

    def segment(self, segment: dict[str, Any], archive: Path | None) -> None:
        """Walk an archived segment's file as the chain's next events."""
        number, first = segment["number"], segment["first_position"]
        at = f"segment {number} ({segment['file']}, positions {first}-{segment['last_position']})"
        after = self.prev
        if (number != self.segments + 1 or segment["first_block"] != self.blocks + 1
                or first != self.count + 1):  # fmt: skip
            self.problem = (self.count + 1, f"{at} does not follow what comes before it", None)
            return
        if archive is None:
            self.problem = (first, f"{at} is archived: name the archive directory", None)
            return
        path = archive / segment["file"]
        if not path.is_file():
            self.problem = (first, f"{at}: its file is missing", None)
            return
        if segments.digest_of(path) != (segment["digest"], segment["bytes"]):
            self.problem = (first, f"{at}: its file was altered", None)
            return
        try:
            for item in segments.read(path):
                if isinstance(item, segments.ArchivedEvent):
                    self.event(item.event, set(item.patients))
                elif self.block is None or any(
                    item[k] != self.block[k] for k in ("number", "statement", "signature")
                ):
                    self.problem = (self.count + 1, f"{at}: its copy of a block differs", None)
                if self.problem is not None:
                    return
        except segments.SegmentError as exc:
            self.problem = (first, f"{at}: {exc}", None)
            return
        reason = self._segment_problem(segment, after)
        if reason:
            self.problem = (first, f"{at}: {reason}", None)
            return
        self.segments = number

    def _segment_problem(self, segment: dict[str, Any], after: str) -> str:
        if (self.count, self.blocks) != (segment["last_position"], segment["last_block"]):
            return "its file ends before the blocks it names"
        if segment["events"] != segment["last_position"] - segment["first_position"] + 1:
            return "its record was altered"
        if segments.statement(segment, after, self.prev) != bytes(segment["statement"]):
            return "its record differs from its signed statement"
        if self.keys is not None:
            return signature_holds(bytes(segment["statement"]), segment["signature"], self.keys,
                                   self.key_cache, kid=segment["kid"])  # fmt: skip
        return ""

    def _chain(self, position: int) -> str:
        """The hash linking the event at ``position``: its block's (its statement
        says, under its signature), SHA-256 before blocks existed."""
        block = self.block
        if block is None or position < block["first_position"]:
            return "sha256"
        if self.chain_of_block[0] != block["number"]:
            try:
                named = chain_of(jsonio.loads(block["statement"]))
            except ValueError:
                named = "sha256"  # the block's own check names the altered statement
            self.chain_of_block = (block["number"], named if named in CHAIN_HASHES else "sha256")
        return self.chain_of_block[1]

    def _in_block(self, event: StoredEvent) -> None:
        block, position = self.block, self.count
        if block is None or position < block["first_position"]:
            if event.block is not None:
                self.problem = (position, "its block was altered", event.seq)
            elif position > self.legacy:  # only events from before blocks may wait
                self.problem = (position, "it is in no signed block", event.seq)
            return
        if event.block != block["number"]:
            self.problem = (position, "its block was altered", event.seq)
            return
        self.leaves.append(event.content)
        if position == block["last_position"]:
            reason = self._block_problem(block, event)
            if reason:
                self.problem = (block["first_position"], f"block {block['number']}: {reason}",
                                None)  # fmt: skip
                return
            self.blocks += 1
            self.last_block_end, self.leaves = position, []
            self.block = next(self.pending, None)

    def _block_problem(self, block: dict[str, Any], last: StoredEvent) -> str:
        if block["number"] != self.blocks + 1 or block["first_position"] != self.last_block_end + 1:
            return "it does not follow the block before it"
        try:
            signed = jsonio.loads(block["statement"])
        except ValueError:
            return "its statement was altered"
        expected = {
            "type": STATEMENT_TYPE,
            "block": block["number"],
            "first": block["first_position"],
            "last": block["last_position"],
            "root": block["root"],
            "head": block["head"],
            "sealed": format_instant(block["sealed"]),
            "legacy": self.legacy,
        }
        if not isinstance(signed, dict) or any(signed.get(k) != v for k, v in expected.items()):
            return "its columns differ from its signed statement"
        if signed.get("chain", "sha256") not in CHAIN_HASHES:
            return "its statement names a chain hash this service does not know"
        if merkle.root(self.leaves) != block["root"]:
            return "its events differ from the ones it sealed (Merkle root)"
        if last.hash != block["head"] or signed.get("after") != self.block_after:
            return "its events differ from the ones it sealed (chain hash)"
        if self.keys is not None:
            return signature_holds(bytes(block["statement"]), block["signature"], self.keys,
                                   self.key_cache, kid=block["kid"])  # fmt: skip
        return ""

    def end(self, head: SealHead, last: dict[str, Any] | None) -> None:
        if self.block is not None:
            self.problem = (
                self.count + 1,
                f"events after position {self.count} were removed (block "
                f"{self.block['number']} seals up to {self.block['last_position']}, the head "
                f"is at {head.position})",
                None,
            )
        elif head.position != self.count or head.hash != self.prev:
            self.problem = (self.count + 1,
                            f"events after position {self.count} were removed (the head is "
                            f"at {head.position})", None)  # fmt: skip
        elif head_disagrees(head, last):
            self.problem = (self.count + 1, f"a block was removed: {head_disagrees(head, last)}",
                            None)  # fmt: skip
