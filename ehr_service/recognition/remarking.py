"""Keeping the recognition mark true (docs/architecture.md §7): when an institution's quality
control or the catalogue edition changes, every result it concerns gets a next
version with the mark as it now should be. The service writes them through the
write pipeline, whoever changed the institution."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection

from ehr_service.fhir import jsonio
from ehr_service.fhir.compartment import EVERYTHING
from ehr_service.fhir.errors import Category, FhirError
from ehr_service.fhir.primitives import utc_now
from ehr_service.mpi.protection import IdNumberProtection
from ehr_service.pipeline import Draft, WritePipeline, WriteRequest
from ehr_service.recognition.catalogue import RESULT_TYPES, Catalogues
from ehr_service.recognition.marks import MARK_SYSTEM, apply_mark, pending_organizations
from ehr_service.storage import recognition as store
from ehr_service.storage import resources
from ehr_service.storage.unit_of_work import UnitOfWork, touch

# What a caller learns of each batch re-marked in its own transaction: (conn, the
# records whose results changed), e.g. to record an operator's audit event in it.
BatchListener = Callable[[Connection, list[str]], None]


def _mark_tags(document: dict[str, Any]) -> list[Any]:
    return [
        t
        for t in (document.get("meta") or {}).get("tag") or ()
        if isinstance(t, dict) and t.get("system") == MARK_SYSTEM
    ]


class Remarker:
    """One per process, over the write pipeline it writes the next versions with."""

    def __init__(
        self,
        pipeline: WritePipeline,
        protection: IdNumberProtection,
        catalogues: Catalogues,
        mark: str,
    ) -> None:
        self.pipeline = pipeline
        self.protection = protection
        self.catalogues = catalogues
        self.mark = mark

    def remark(
        self, conn: Connection, cause: WriteRequest, keys: list[tuple[str, str]]
    ) -> list[str]:
        """The next version of each result whose mark is no longer right; returns
        the records (compartment patient ids) of those that changed. The service
        writes them, seeing every record; a partner's message that caused it stays
        their origin (what a partner sent is never queued back to partners)."""
        request = WriteRequest(cause.base_url, EVERYTHING, cause.from_partner, cause.request_id)
        changed: list[str] = []
        for resource_type, resource_id in keys:
            stored = resources.read_current(conn, resource_type, resource_id, for_update=True)
            if stored is None or stored.deleted or stored.content is None:
                continue
            document = self.protection.reveal(jsonio.loads(stored.content))
            before = _mark_tags(document)
            apply_mark(conn, self.catalogues, self.mark, resource_type, document)
            if _mark_tags(document) == before:
                continue
            written = self.pipeline.store_next(
                conn, request, stored, document, method="PUT", now=utc_now()
            )
            if written is None:
                raise FhirError.of(
                    Category.CONFLICT,
                    f"{resource_type}/{resource_id} was changed concurrently; retry",
                    code="conflict",
                )
            changed.append(stored.compartment_patient_id or "")
        touch(conn, changed)
        return changed

    def institution_written(self, draft: Draft) -> None:
        """A ``RESOURCE`` hook for Organizations: their results' marks follow their
        quality control, in the same transaction."""
        keys = store.results_performed_by(draft.conn, draft.resource_id, RESULT_TYPES)
        if not keys:
            return
        pending = {f"Organization/{draft.resource_id}": draft.resource}
        token = pending_organizations.set({**(pending_organizations.get() or {}), **pending})
        try:
            self.remark(draft.conn, draft.request, keys)
        finally:
            pending_organizations.reset(token)

    def remark_all(
        self,
        unit: UnitOfWork,
        base_url: str,
        batch: int = 500,
        on_batch: BatchListener | None = None,
    ) -> int:
        """After a catalogue edition switch: every result, a batch per transaction."""
        changed = 0
        for resource_type in RESULT_TYPES:
            after = None
            while True:
                with unit.write() as conn:
                    ids = store.result_ids(conn, resource_type, after, batch)
                    records = self.remark(
                        conn, WriteRequest(base_url), [(resource_type, i) for i in ids]
                    )
                    if records and on_batch is not None:
                        on_batch(conn, records)
                changed += len(records)
                if len(ids) < batch:
                    break
                after = ids[-1]
        return changed
