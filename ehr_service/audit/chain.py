"""Verify the audit chain (``ehr-service audit verify``): walk the sealed events
in chain order and their signed blocks, and name the first event or block that
was altered, removed or reordered, or whose signature fails."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from ehr_service.audit import merkle
from ehr_service.audit.events import acted_on, kind_of, organization_of
from ehr_service.audit.sealing import BlockKeys, signature_holds
from ehr_service.fhir import jsonio
from ehr_service.fhir.primitives import format_instant
from ehr_service.storage import audit as audit_store
from ehr_service.storage.audit import GENESIS, SealHead, StoredEvent, chain_hash
from ehr_service.storage.unit_of_work import UnitOfWork


@dataclass(frozen=True, slots=True)
class Verdict:
    events: int  # sealed events verified
    first_bad: int | None = None  # chain position of the first break
    reason: str = ""
    unsealed: int = 0  # committed, not sealed yet
    blocks: int = 0  # blocks verified
    event: int | None = None  # the id of the event at fault, where one is named

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


def verify(unit: UnitOfWork, keys: BlockKeys | None = None) -> Verdict:
    """Walk the sealed chain in order, and its blocks: the first event or block
    that was altered, removed or reordered, or whose signature fails. Without
    ``keys`` signatures are not checked (the rest is)."""
    with unit.read() as conn:
        walker = _Walk(keys)
        for event in audit_store.walk(conn):
            if walker.problem is None:
                walker.event(event, conn)
            if walker.problem is not None:
                break
        if walker.problem is None:
            walker.end(audit_store.head(conn))
        unsealed = audit_store.count_unsealed(conn)
    problem = walker.problem
    if problem is not None:
        return Verdict(walker.count, problem[0], problem[1], unsealed, walker.blocks, problem[2])
    return Verdict(walker.count, unsealed=unsealed, blocks=walker.blocks)


class _Walk:
    """The state of one walk: the chain so far and the block being checked."""

    def __init__(self, keys: BlockKeys | None) -> None:
        self.keys = keys
        self.count, self.prev = 0, GENESIS
        self.blocks, self.last_block_end = 0, 0
        self.pending: Iterator[dict[str, Any]] | None = None
        self.block: dict[str, Any] | None = None
        self.leaves: list[bytes] = []
        self.touched: dict[int, set[str]] = {}
        self.window = (1, 0)  # the event ids ``touched`` holds
        self.block_after = GENESIS
        self.key_cache: dict[str, Any] = {}
        self.problem: tuple[int, str, int | None] | None = None

    def _next_block(self, conn: Connection) -> None:
        if self.pending is None:
            self.pending = audit_store.blocks(conn)
        self.block = next(self.pending, None)

    def event(self, event: StoredEvent, conn: Connection) -> None:
        position = self.count + 1
        if self.count == 0:
            self._next_block(conn)
        if event.position != position:
            self.problem = (position, f"the event at position {position} is missing or moved",
                            None)  # fmt: skip
            return
        if event.prev_hash != self.prev:
            self.problem = (position, "it does not follow the event before it", event.seq)
            return
        if chain_hash(self.prev, position, event.content) != event.hash:
            self.problem = (position, "its content or hash was altered", event.seq)
            return
        if not self.window[0] <= event.seq <= self.window[1]:
            self.window = (event.seq, event.seq + 999)
            self.touched = audit_store.accesses(conn, *self.window)
        reason = _columns_disagree(event, self.touched.get(event.seq, set()))
        if reason:
            self.problem = (position, reason, event.seq)
            return
        if self.block is not None and position == self.block["first_position"]:
            self.block_after = self.prev  # the chain hash the block's statement follows
        self.count, self.prev = position, event.hash
        self._in_block(event, conn)

    def _in_block(self, event: StoredEvent, conn: Connection) -> None:
        block, position = self.block, self.count
        if block is None or position < block["first_position"]:
            if event.block is not None:  # an event from before the blocks, or a gap
                self.problem = (position, "its block was altered", event.seq)
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
            self._next_block(conn)

    def _block_problem(self, block: dict[str, Any], last: StoredEvent) -> str:
        if block["number"] != self.blocks + 1 or block["first_position"] != self.last_block_end + 1:
            return "it does not follow the block before it"
        try:
            signed = jsonio.loads(block["statement"])
        except ValueError:
            return "its statement was altered"
        expected = {
            "block": block["number"],
            "first": block["first_position"],
            "last": block["last_position"],
            "root": block["root"],
            "head": block["head"],
        }
        if any(signed.get(k) != v for k, v in expected.items()):
            return "its columns differ from its signed statement"
        if merkle.root(self.leaves) != block["root"]:
            return "its events differ from the ones it sealed (Merkle root)"
        if last.hash != block["head"] or signed.get("after") != self.block_after:
            return "its events differ from the ones it sealed (chain hash)"
        if self.keys is not None:
            return signature_holds(bytes(block["statement"]), block["signature"], self.keys,
                                   self.key_cache)  # fmt: skip
        return ""

    def end(self, head: SealHead) -> None:
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
        elif head.block != self.blocks:
            self.problem = (self.count + 1, "a block was removed (the head names a later one)",
                            None)  # fmt: skip
