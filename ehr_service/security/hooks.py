"""The access-policy and consent hooks of the write pipeline (docs/architecture.md §9)."""

from __future__ import annotations

from ehr_service.pipeline import Draft, Hook, Stage
from ehr_service.security.consent import permits, refusals
from ehr_service.security.policy import check_write
from ehr_service.security.references import PENDING_IDENTITIES, check_patient_references
from ehr_service.storage.database import transaction_cache


def _own_record_only(draft: Draft) -> None:
    view = draft.request.view
    check_write(view, draft.resource_type, draft.owner, draft.patients)
    check_patient_references(
        draft.conn,
        view,
        draft.resource,
        draft.request.base_url,
        transaction_cache(draft.conn, PENDING_IDENTITIES),
    )


def _consent_refusals(draft: Draft) -> None:
    patient, refused = refusals(draft.resource)
    draft.consent = (patient, refused + permits(draft.resource))


def hooks() -> list[Hook]:
    return [
        # A patient-bound token writes its own record only, pointing nowhere else.
        Hook("own-record-only", Stage.OWNER, _own_record_only),
        # A Consent's refusals (and permits) are kept beside it, for every read to consult.
        Hook("consent-refusals", Stage.VERSION, _consent_refusals, frozenset({"Consent"})),
    ]
