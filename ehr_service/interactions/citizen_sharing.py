"""The citizen's separate consent to cross-region sharing (``/citizen/v1/me/sharing-permits``).

Under ``EHR_SHARING_POLICY=consent-required`` a resident's results cross to another
region only while they hold an active permit Consent for it (PIPL art. 23 and 29:
separate consent for sensitive personal information given to another handler).
Granting writes that Consent, withdrawing makes every active permit for the region
inactive: a permit granted twice (two devices at once) is withdrawn by one request.
Under ``opt-out`` the permits are kept but nothing depends on them.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from ehr_service.fhir import jsonio
from ehr_service.fhir.errors import Category, FhirError
from ehr_service.interactions import create, update
from ehr_service.interactions.citizen import as_service, patient_of, privacy_consent
from ehr_service.interactions.context import RequestContext
from ehr_service.interactions.read import current_or_fail
from ehr_service.interactions.results import Result
from ehr_service.security.consent import (
    MAX_REGION_CHARS,
    PERMIT,
    REGION_SYSTEM,
    SEPARATE_CONSENT,
    permits,
)
from ehr_service.storage import search_queries

CONSENT_SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"


def _region(value: Any, home: str) -> str:
    if not (
        isinstance(value, str)
        and value.isascii()
        and value.isalnum()
        and 0 < len(value) <= MAX_REGION_CHARS
    ):
        raise FhirError.of(
            Category.INCORRECT,
            f'Send {{"region": "<code>"}}: a region code of letters and digits, at most '
            f"{MAX_REGION_CHARS}",
            code="value",
        )
    if value == home:
        raise FhirError.of(
            Category.INCORRECT,
            f"{value} is this service's own region: sharing permits are for other regions",
            code="value",
        )
    return value


def _active_permits(conn: Connection, patient_id: str) -> list[tuple[str, dict[str, Any]]]:
    page = search_queries.compartment_page(
        conn, patient_id, types=["Consent"], since=None, after=None, limit=1000
    )
    found = []
    for stored in page:
        consent = jsonio.loads(stored.content)
        if permits(consent):
            found.append((stored.resource_id, consent))
    return found


def _item(consent_id: str, consent: dict[str, Any]) -> dict[str, Any]:
    regions = [a.removeprefix(f"{PERMIT}region:") for a in permits(consent)
               if a.startswith(f"{PERMIT}region:")]  # fmt: skip
    return {
        "id": consent_id,
        "status": consent.get("status"),
        "regions": regions,
        "dateTime": consent.get("dateTime"),
        "legalBasis": SEPARATE_CONSENT["code"],
    }


def list_permits(conn: Connection, ctx: RequestContext) -> Result:
    patient_id = patient_of(ctx, "Consent")
    items = [_item(cid, consent) for cid, consent in _active_permits(conn, patient_id)]
    body = {"policy": ctx.settings.sharing_policy, "items": items}
    return Result(200, body, patients=frozenset({patient_id}))


def grant_permit(conn: Connection, ctx: RequestContext, body: Any) -> Result:
    """Body ``{"region": "sichuan"}``: my separate consent to share with that region.
    Granted already: the active permit is answered (200), nothing is written."""
    patient_id = patient_of(ctx, "Consent", "c")
    if not isinstance(body, dict) or set(body) != {"region"}:
        raise FhirError.of(Category.INCORRECT, 'Send {"region": "<code>"}', code="invalid")
    region = _region(body["region"], ctx.settings.region)
    for consent_id, consent in _active_permits(conn, patient_id):
        if f"{PERMIT}region:{region}" in permits(consent):
            return Result(200, _item(consent_id, consent), "Consent", consent_id,
                          patients=frozenset({patient_id}))  # fmt: skip
    consent = privacy_consent(
        patient_id, "permit", {"identifier": {"system": REGION_SYSTEM, "value": region}},
        policyRule={"coding": [SEPARATE_CONSENT]},
    )  # fmt: skip
    created = create.create(conn, as_service(ctx), "Consent", consent)
    assert created.resource_id is not None
    return Result(201, _item(created.resource_id, consent), "Consent", created.resource_id,
                  patients=frozenset({patient_id}))  # fmt: skip


def withdraw_permit(conn: Connection, ctx: RequestContext, region: str) -> Result:
    """Every active permit of mine for ``region`` becomes inactive; none: 404."""
    patient_id = patient_of(ctx, "Consent", "u")
    region = _region(region, ctx.settings.region)
    withdrawn = []
    for consent_id, consent in _active_permits(conn, patient_id):
        if f"{PERMIT}region:{region}" not in permits(consent):
            continue
        stored = current_or_fail(conn, "Consent", consent_id, view=ctx.view, for_update=True)
        updated = jsonio.loads(stored.content or b"{}")
        updated["status"] = "inactive"
        update.store_next_version(conn, as_service(ctx), stored, updated, method="PUT")
        withdrawn.append(consent_id)
    if not withdrawn:
        raise FhirError.of(
            Category.NOT_FOUND, f"You have no active sharing permit for {region}", code="not-found"
        )
    body = {"region": region, "status": "inactive", "withdrawn": withdrawn}
    return Result(200, body, "Consent", withdrawn[0], patients=frozenset({patient_id}))
