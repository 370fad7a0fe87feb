"""The resident-identity hook of the write pipeline (docs/architecture.md §6): ID numbers are
checked, indexed by blind token and stored sealed; a Patient keeps its lifelong
record number; an ID number written outside an identifier is masked."""

from __future__ import annotations

from ehr_service.fhir import jsonio
from ehr_service.fhir.errors import Issue
from ehr_service.fhir.search.values import IndexRows
from ehr_service.mpi.identity import ResidentIdentity
from ehr_service.mpi.idnumber import ID_NUMBER_SYSTEM
from ehr_service.mpi.protection import Prepared
from ehr_service.pipeline import Draft, Hook, Stage

FREE_TEXT_WARNING = Issue(
    "A resident ID number outside an identifier (e.g. in text) was masked; "
    f"send ID numbers as identifiers of system {ID_NUMBER_SYSTEM}",
    "value",
    "warning",
)


def sealing(identity: ResidentIdentity) -> Hook:
    """The one ``SEAL`` hook: the stored bytes and index rows of a version."""
    protection = identity.protection

    def sealed(draft: Draft, prepared: Prepared) -> tuple[bytes, IndexRows]:
        prepared.index_form()  # index the blind tokens, then store masks and seals
        index = draft.index_of(prepared.resource)
        prepared.stored_form(protection.seal)
        return jsonio.dumps(prepared.resource), index

    def seal(draft: Draft) -> None:
        prepared = identity.prepare(draft.conn, draft.resource, draft.previous)
        content, index = sealed(draft, prepared)
        if protection.has_free_text_number(content, prepared.values):
            protection.mask_free_text(draft.resource, prepared.values)
            prepared.warnings.append(FREE_TEXT_WARNING)
            content, index = sealed(draft, prepared)
        draft.content, draft.index = content, index
        draft.id_number = prepared.unique_key
        draft.id_number_claims = prepared.claims
        draft.warnings.extend(prepared.warnings)

    return Hook("resident-identity", Stage.SEAL, seal)
