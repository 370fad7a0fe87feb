"""The recognition hooks of the write pipeline (docs/architecture.md §7): the mark is set by
the server only, on every write of every type; institutions and practitioners carry
valid master data and a known region; an institution's results follow its quality
control."""

from __future__ import annotations

from collections.abc import Iterable

from ehr_service.fhir.errors import Category, FhirError
from ehr_service.pipeline import Deletion, Draft, Hook, Stage
from ehr_service.recognition.catalogue import Catalogues
from ehr_service.recognition.institutions import REGION_URL
from ehr_service.recognition.marks import apply_mark, forget_institution
from ehr_service.recognition.master_data import check_organization, check_practitioner
from ehr_service.recognition.remarking import Remarker
from ehr_service.storage import partners

ORGANIZATION = frozenset({"Organization"})
MASTER_DATA = frozenset({"Organization", "Practitioner"})


def _check_region(draft: Draft, configured: frozenset[str]) -> None:
    """An institution's region is one this service knows: EHR_REGION, EHR_REGIONS or
    a registered partner's region (read only when needed)."""
    for index, extension in enumerate(draft.resource.get("extension") or ()):
        if not isinstance(extension, dict) or extension.get("url") != REGION_URL:
            continue
        region = extension.get("valueCode")
        if region in configured:
            continue
        known = configured | {row["region"] for row in partners.all_partners(draft.conn)}
        if region not in known:
            raise FhirError.of(
                Category.UNPROCESSABLE,
                f"Unknown recognition region {str(region)[:64]!r}: this service knows "
                f"{', '.join(sorted(known))} (EHR_REGION, EHR_REGIONS and registered partners)",
                code="code-invalid",
                expression=[f"Organization.extension[{index}].valueCode"],
            )


def hooks(
    catalogues: Catalogues | None,
    mark: str,
    remarker: Remarker | None,
    regions: Iterable[str] = (),
) -> list[Hook]:
    configured = frozenset(regions)

    def forget(draft: Draft | Deletion) -> None:  # read again, not from this transaction's cache
        forget_institution(draft.conn, draft.resource_id)

    def master_data(draft: Draft) -> None:
        if draft.resource_type == "Organization":
            check_organization(draft.resource)
            _check_region(draft, configured)
        else:
            check_practitioner(draft.resource)

    def set_mark(draft: Draft) -> None:
        apply_mark(draft.conn, catalogues, mark, draft.resource_type, draft.resource)

    found = [
        Hook("institution-master-data", Stage.RESOURCE, master_data, MASTER_DATA),
        Hook("institution-cache", Stage.RESOURCE, forget, ORGANIZATION),
    ]
    if remarker is not None:
        found.append(
            Hook("institution-remark", Stage.RESOURCE, remarker.institution_written, ORGANIZATION)
        )
    found.append(Hook("recognition-mark", Stage.RESOURCE, set_mark))
    found.append(Hook("institution-cache", Stage.DELETE, forget, ORGANIZATION))
    return found
