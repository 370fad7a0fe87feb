"""The region's recognition mark (e.g. ``川渝HR``) on results that qualify for
mutual recognition: a final result of a catalogue item, performed by an
institution that had passed quality control for the item's category on the
result's date. Set when the result is stored (so it is served with the stored
JSON and found by ``_tag``); clients cannot set or remove it themselves. Whether
a result is still within its validity window is answered by
``$recognizable-results``, not by the mark."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from sqlalchemy import Connection

from ehr_service.fhir import jsonio
from ehr_service.fhir.references import parse_reference
from ehr_service.recognition.catalogue import RESULT_TYPES, Catalogues
from ehr_service.recognition.institutions import Institution, institution_of
from ehr_service.recognition.rules import is_final, result_date
from ehr_service.storage import resources
from ehr_service.storage.database import transaction_cache

MARK_SYSTEM = "urn:ehr-service:recognition-mark"
INSTITUTIONS = "institutions"
# Organizations being written in this transaction (not yet readable from the database):
# the results re-marked because of them must see their new quality control.
pending_organizations: ContextVar[dict[str, dict[str, Any]] | None] = ContextVar(
    "pending_organizations", default=None
)


def performer_of(resource_type: str, resource: dict[str, Any]) -> str | None:
    """The local Organization that performed a result, if named."""
    references: list[Any] = list(resource.get("performer") or ())
    if resource_type == "ImagingStudy":
        for series in resource.get("series") or ():
            if isinstance(series, dict):
                references += [(p or {}).get("actor") for p in series.get("performer") or ()]
    for reference in references:
        value = reference.get("reference") if isinstance(reference, dict) else None
        parsed = parse_reference(value) if isinstance(value, str) else None
        if parsed is not None and parsed.resource_type == "Organization" and parsed.base is None:
            return f"Organization/{parsed.resource_id}"
    return None


def qualifies(
    conn: Connection,
    catalogues: Catalogues,
    resource_type: str,
    resource: dict[str, Any],
    organizations: dict[str, dict[str, Any]] | None = None,
) -> bool:
    """``organizations``: Organizations being written now (by reference), which the
    database does not hold yet."""
    catalogue = catalogues.active()
    if catalogue is None or not is_final(resource_type, resource):
        return False
    item = catalogue.item_for(resource_type, resource)
    day = result_date(resource_type, resource)
    performer = performer_of(resource_type, resource)
    if item is None or day is None or performer is None:
        return False
    organization = {**(pending_organizations.get() or {}), **(organizations or {})}.get(performer)
    institution = (
        _stored_institution(conn, performer)
        if organization is None
        else institution_of(performer, organization)
    )
    return institution is not None and institution.passed(item.qc_category, day)


def _stored_institution(conn: Connection, performer: str) -> Institution | None:
    """Read once per transaction (a batch of results names few institutions)."""
    org_id = performer.partition("/")[2]
    cache = transaction_cache(conn, INSTITUTIONS)
    if org_id not in cache:
        content = resources.live_contents(conn, "Organization", [org_id]).get(org_id)
        if content is None:  # not kept: it may be written later in this transaction
            return None
        cache[org_id] = institution_of(performer, jsonio.loads(content))
    found: Institution = cache[org_id]
    return found


def forget_institution(conn: Connection, org_id: str) -> None:
    """An Organization is being written in this transaction."""
    transaction_cache(conn, INSTITUTIONS).pop(org_id, None)


def apply_mark(
    conn: Connection,
    catalogues: Catalogues | None,
    mark: str,
    resource_type: str,
    resource: dict[str, Any],
    organizations: dict[str, dict[str, Any]] | None = None,
) -> None:
    """Set or clear the mark in ``resource.meta.tag`` (in place). Only results can
    carry it; on any other resource a client's copy is removed."""
    meta = resource.get("meta")
    if not isinstance(meta, dict):
        return
    tags = [
        t
        for t in meta.get("tag") or ()
        if not (isinstance(t, dict) and t.get("system") == MARK_SYSTEM)
    ]
    if (
        resource_type in RESULT_TYPES
        and catalogues is not None
        and qualifies(conn, catalogues, resource_type, resource, organizations)
    ):
        tags.append({"system": MARK_SYSTEM, "code": mark, "display": "检查检验结果互认"})
    if tags:
        meta["tag"] = tags
    else:
        meta.pop("tag", None)
