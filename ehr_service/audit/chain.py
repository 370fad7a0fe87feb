"""Verify the audit chain (``ehr-service audit verify``): walk it in order and
name the first event that was altered, removed or reordered."""

from __future__ import annotations

from dataclasses import dataclass

from ehr_service.storage import audit as audit_store
from ehr_service.storage.audit import GENESIS, chain_hash
from ehr_service.storage.database import Database


@dataclass(frozen=True, slots=True)
class Verdict:
    events: int
    first_bad: int | None = None  # sequence number of the first broken event
    reason: str = ""

    @property
    def intact(self) -> bool:
        return self.first_bad is None


def verify(database: Database) -> Verdict:
    with database.read() as conn:
        expected_seq, prev = 1, GENESIS
        count = 0
        for event in audit_store.walk(conn):
            if event.seq != expected_seq:
                return Verdict(count, expected_seq, f"event {expected_seq} is missing or moved")
            if event.prev_hash != prev:
                return Verdict(count, event.seq, "it does not follow the event before it")
            if chain_hash(event.prev_hash, event.seq, event.content) != event.hash:
                return Verdict(count, event.seq, "its content or hash was altered")
            count += 1
            expected_seq, prev = event.seq + 1, event.hash
        head_seq, head_hash = audit_store.head(conn)
        if head_seq != count or head_hash != prev:
            return Verdict(count, count + 1, "events after it were removed (the head is ahead)")
    return Verdict(count)
