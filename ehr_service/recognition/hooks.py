"""The recognition hooks of the write pipeline (docs/architecture.md §7): the mark is set by
the server only, on every write of every type, and an institution's results
follow its quality control."""

from __future__ import annotations

from ehr_service.pipeline import Deletion, Draft, Hook, Stage
from ehr_service.recognition.catalogue import Catalogues
from ehr_service.recognition.marks import apply_mark, forget_institution
from ehr_service.recognition.remarking import Remarker

ORGANIZATION = frozenset({"Organization"})


def hooks(catalogues: Catalogues | None, mark: str, remarker: Remarker | None) -> list[Hook]:
    def forget(draft: Draft | Deletion) -> None:  # read again, not from this transaction's cache
        forget_institution(draft.conn, draft.resource_id)

    def set_mark(draft: Draft) -> None:
        apply_mark(draft.conn, catalogues, mark, draft.resource_type, draft.resource)

    found = [Hook("institution-cache", Stage.RESOURCE, forget, ORGANIZATION)]
    if remarker is not None:
        found.append(
            Hook("institution-remark", Stage.RESOURCE, remarker.institution_written, ORGANIZATION)
        )
    found.append(Hook("recognition-mark", Stage.RESOURCE, set_mark))
    found.append(Hook("institution-cache", Stage.DELETE, forget, ORGANIZATION))
    return found
