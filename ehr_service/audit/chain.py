"""Verify the audit chain (``ehr-service audit verify``): walk it in order and
name the first event that was altered, removed or reordered."""

from __future__ import annotations

from dataclasses import dataclass

from ehr_service.audit.events import acted_on, kind_of, organization_of
from ehr_service.fhir import jsonio
from ehr_service.fhir.primitives import format_instant
from ehr_service.storage import audit as audit_store
from ehr_service.storage.audit import GENESIS, StoredEvent, chain_hash
from ehr_service.storage.unit_of_work import UnitOfWork


@dataclass(frozen=True, slots=True)
class Verdict:
    events: int
    first_bad: int | None = None  # sequence number of the first broken event
    reason: str = ""

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


def verify(unit: UnitOfWork) -> Verdict:
    with unit.read() as conn:
        expected_seq, prev = 1, GENESIS
        count = 0
        touched: dict[int, set[str]] = {}
        for event in audit_store.walk(conn):
            if event.seq != expected_seq:
                return Verdict(count, expected_seq, f"event {expected_seq} is missing or moved")
            if event.prev_hash != prev:
                return Verdict(count, event.seq, "it does not follow the event before it")
            if chain_hash(event.prev_hash, event.seq, event.content) != event.hash:
                return Verdict(count, event.seq, "its content or hash was altered")
            if event.seq not in touched:
                touched = audit_store.accesses(conn, event.seq, event.seq + 999)
            problem = _columns_disagree(event, touched.get(event.seq, set()))
            if problem:
                return Verdict(count, event.seq, problem)
            count += 1
            expected_seq, prev = event.seq + 1, event.hash
        head_seq, head_hash = audit_store.head(conn)
        if head_seq != count or head_hash != prev:
            return Verdict(count, count + 1, "events after it were removed (the head is ahead)")
    return Verdict(count)
