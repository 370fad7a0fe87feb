"""Where the images of a recognisable imaging result can be retrieved
(docs/architecture.md §7): an ImagingStudy's ``endpoint`` naming an active
Endpoint of connection type ``dicom-wado-rs`` gives the WADO-RS base (DICOM
PS3.18 §10.4); with the study's Study Instance UID also the study's own URL.

``$recognizable-results`` adds, per such study and unless the resident refused
its use, an ``endpoint`` part (valueUrl, the base) and a ``retrieve`` part
(valueUrl, ``{base}/studies/{uid}``) when the UID is known. References that are
not local ``Endpoint/{id}``, Endpoints that are not active, of another type, or
with an address that is not an http(s) URL, and callers who may not read
Endpoints, get no part: the result itself is unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Connection

from ehr_service.fhir import jsonio
from ehr_service.fhir.errors import FhirError
from ehr_service.fhir.references import parse_reference
from ehr_service.interactions.context import RequestContext
from ehr_service.recognition.rules import Candidate
from ehr_service.security.policy import require
from ehr_service.storage import resources

CONNECTION_TYPES = "http://terminology.hl7.org/CodeSystem/endpoint-connection-type"
WADO_RS = "dicom-wado-rs"
DICOM_UID = "urn:dicom:uid"
UID_CHARS = frozenset("0123456789.")
MAX_ADDRESS = 2048


def _endpoint_ids(study: dict[str, Any]) -> list[str]:
    """The local Endpoint ids a study names (study level, then its series)."""
    references: list[Any] = list(study.get("endpoint") or ())
    for series in study.get("series") or ():
        if isinstance(series, dict):
            references += list(series.get("endpoint") or ())
    ids = []
    for reference in references:
        value = reference.get("reference") if isinstance(reference, dict) else None
        parsed = parse_reference(value) if isinstance(value, str) else None
        if parsed and parsed.resource_type == "Endpoint" and parsed.base is None:
            ids.append(parsed.resource_id)
    return list(dict.fromkeys(ids))


def wado_rs_base(endpoint: dict[str, Any]) -> str | None:
    """The WADO-RS base of an active ``dicom-wado-rs`` Endpoint, else None."""
    kind = endpoint.get("connectionType")
    if endpoint.get("status") != "active" or not isinstance(kind, dict):
        return None
    if kind.get("code") != WADO_RS or kind.get("system") not in (None, CONNECTION_TYPES):
        return None
    address = endpoint.get("address")
    if not isinstance(address, str) or len(address) > MAX_ADDRESS:
        return None
    try:
        parts = urlsplit(address)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return address.rstrip("/")


def study_uid(study: dict[str, Any]) -> str | None:
    """The Study Instance UID (identifier system ``urn:dicom:uid``, ``urn:oid:``)."""
    for identifier in study.get("identifier") or ():
        if not isinstance(identifier, dict) or identifier.get("system") != DICOM_UID:
            continue
        value = identifier.get("value")
        uid = value.removeprefix("urn:oid:") if isinstance(value, str) else ""
        if 0 < len(uid) <= 64 and set(uid) <= UID_CHARS:
            return uid
    return None


def _may_read_endpoints(ctx: RequestContext) -> bool:
    try:
        require(ctx.caller, "Endpoint", "r")
    except FhirError:
        return False
    return True


def image_parts(
    conn: Connection,
    ctx: RequestContext,
    found: Iterable[tuple[Candidate, dict[str, Any]]],
) -> dict[str, list[dict[str, Any]]]:
    """By result reference: the ``endpoint`` and ``retrieve`` parts of its images."""
    studies = [(c.reference, r) for c, r in found if c.resource_type == "ImagingStudy"]
    named = {reference: _endpoint_ids(study) for reference, study in studies}
    wanted = sorted({i for ids in named.values() for i in ids})
    if not wanted or not _may_read_endpoints(ctx):
        return {}
    bases = {}
    for endpoint_id, content in resources.live_contents(conn, "Endpoint", wanted).items():
        if ctx.view.can_see("Endpoint", None):
            base = wado_rs_base(jsonio.loads(content))
            if base is not None:
                bases[endpoint_id] = base
    out: dict[str, list[dict[str, Any]]] = {}
    for reference, study in studies:
        base = next((bases[i] for i in named[reference] if i in bases), None)
        if base is None:
            continue
        parts = [{"name": "endpoint", "valueUrl": base}]
        uid = study_uid(study)
        if uid is not None:
            parts.append({"name": "retrieve", "valueUrl": f"{base}/studies/{uid}"})
        out[reference] = parts
    return out
