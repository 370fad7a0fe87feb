"""Which stored results go to which partners (docs/architecture.md §8): final laboratory and
imaging results of residents who have not refused the partner's region and, where
the deployment's sharing policy is ``consent-required``, who hold an active permit
Consent for it. Decided in the transaction that stores the result, so the outbox row
commits with it, and again when it is sent or served in the feed."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from ehr_service.fhir import jsonio
from ehr_service.pipeline import Draft, Hook, Stage
from ehr_service.security.consent import PERMIT
from ehr_service.storage import consent as consent_store
from ehr_service.storage import partners as partner_store
from ehr_service.storage.database import transaction_cache

FINAL = frozenset({"final", "amended", "corrected"})
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
DIAGNOSTIC_SECTION = "http://terminology.hl7.org/CodeSystem/v2-0074"
LAB_SECTIONS = frozenset({"LAB", "HM", "CH", "SR", "MB", "IMM", "BLB", "CG", "CP", "SP", "TX"})
IMAGING_SECTIONS = frozenset({"RAD", "CT", "NMR", "NMS", "RX", "RUS", "VUS", "OUS", "CUS", "XRC"})


def _codes(concepts: Any, system: str) -> set[str]:
    codes: set[str] = set()
    for concept in concepts if isinstance(concepts, list) else ():
        for coding in (concept or {}).get("coding") or () if isinstance(concept, dict) else ():
            if isinstance(coding, dict) and coding.get("system") == system:
                codes.add(str(coding.get("code")))
    return codes


def result_kind(resource_type: str, resource: dict[str, Any]) -> str | None:
    """'laboratory' or 'imaging' for a finished result of either kind, else None."""
    status = resource.get("status")
    if resource_type == "ImagingStudy":
        return "imaging" if status == "available" else None
    if status not in FINAL:
        return None
    if resource_type == "Observation":
        codes = _codes(resource.get("category"), OBSERVATION_CATEGORY)
        if "laboratory" in codes:
            return "laboratory"
        return "imaging" if "imaging" in codes else None
    if resource_type == "DiagnosticReport":
        codes = _codes(resource.get("category"), DIAGNOSTIC_SECTION)
        if codes & LAB_SECTIONS:
            return "laboratory"
        return "imaging" if codes & IMAGING_SECTIONS else None
    return None


def shared_with(
    conn: Connection,
    resource_type: str,
    resource: dict[str, Any],
    owner: str | None,
    policy: str = "opt-out",
) -> tuple[str, ...]:
    """The partners a version of a resident's result is queued for."""
    if owner is None or resource_type not in {"Observation", "DiagnosticReport", "ImagingStudy"}:
        return ()
    if result_kind(resource_type, resource) is None:
        return ()
    partners = []
    cache = transaction_cache(conn, "partners")  # once per unit of work, not per result
    if "all" not in cache:
        cache["all"] = partner_store.all_partners(conn)
    for row in cache["all"]:
        if resource_type not in jsonio.loads(row["allowed_types"]):
            continue
        actors = [f"region:{row['region']}", f"Organization/{row['partner_id']}", "*"]
        if consent_store.refused(conn, owner, actors):
            continue
        permits = [f"{PERMIT}{a}" for a in actors[:2]]  # a permit names a region or partner
        if policy == "consent-required" and not consent_store.permitted(conn, owner, permits):
            continue
        partners.append(row["partner_id"])
    return tuple(partners)


def outbox_hook(policy: str = "opt-out") -> Hook:
    """Results are queued for partners in the transaction that stores them; what a
    partner sent is not sent on (it is theirs to share)."""

    def queue(draft: Draft) -> None:
        if draft.request.from_partner is None:
            draft.outbox = shared_with(
                draft.conn, draft.resource_type, draft.resource, draft.owner, policy
            )

    return Hook("exchange-outbox", Stage.VERSION, queue)
