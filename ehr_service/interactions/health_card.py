"""E-health card operations (``mpi/health_card.py``): ``Patient/{id}/$bind-health-card``
binds a card to a resident; ``Patient/$resolve-health-card`` turns a scanned QR code
into the resident's Patient for a hospital, each use audited with its scene code."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from ehr_service.fhir.errors import Category, FhirError
from ehr_service.fhir.parameters import OperationInput
from ehr_service.fhir.primitives import utc_now
from ehr_service.interactions import read
from ehr_service.interactions.context import RequestContext
from ehr_service.interactions.read import current_or_fail
from ehr_service.interactions.results import Result
from ehr_service.mpi.health_card import (
    BLIND_PURPOSE,
    SCENES,
    CardRejectedError,
    CardVerifier,
    normalised,
)
from ehr_service.security.policy import require_staff
from ehr_service.storage import health_cards as store


def _bad(message: str, name: str) -> FhirError:
    return FhirError.of(Category.INCORRECT, message, code="value", expression=[name])


def _string(params: OperationInput, name: str, required: bool = True) -> str | None:
    value = params.value(name, "String")
    if value is None and required:
        raise FhirError.of(Category.INCORRECT, f"{name} is required", code="required",
                           expression=[name])  # fmt: skip
    if value is not None and (not isinstance(value, str) or len(value) > 4096):
        raise _bad(f"{name} must be a string of at most 4096 characters", name)
    return value


def scene_of(body: Any) -> str:
    """The scene code of a card use (Parameters ``scene``, valueCode), checked first:
    a use without a known scene is refused before anything is read."""
    scene = OperationInput(body, "$resolve-health-card").value("scene", "Code")
    if not isinstance(scene, str) or scene not in SCENES:
        raise _bad(f"scene must be one of {', '.join(sorted(SCENES))}", "scene")
    return scene


def bind(conn: Connection, ctx: RequestContext, patient_id: str, body: Any) -> Result:
    """Bind the card (Parameters ``cardId``, valueString) to the resident: 200 when it
    is bound to them (now or before), 409 when another resident holds it."""
    require_staff(ctx.caller, "Patient", "u")
    params = OperationInput(body, "$bind-health-card")
    try:
        card = normalised(_string(params, "cardId"))
    except ValueError as exc:
        raise _bad(str(exc), "cardId") from None
    current_or_fail(conn, "Patient", patient_id, view=ctx.view)
    keyring = ctx.services.identity.protection.keyring
    blind = keyring.blind(BLIND_PURPOSE, card)
    holder = store.holder_of(conn, blind)
    if holder is None:
        sealed = keyring.seal(card, f"health-card:{patient_id}")
        holder = store.bind(conn, blind, patient_id, sealed, utc_now())
    if holder != patient_id:
        raise FhirError.of(
            Category.CONFLICT, "This e-health card is bound to another resident", code="conflict"
        )
    answer = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "patient", "valueReference": {"reference": f"Patient/{patient_id}"}},
            {"name": "bound", "valueBoolean": True},
        ],
    }
    return Result(200, answer, "Patient", patient_id, patients=frozenset({patient_id}))


def resolve(
    conn: Connection, ctx: RequestContext, body: Any, verifier: CardVerifier | None
) -> Result:
    """The Patient of the card a QR code proves (Parameters ``qrCode``, ``verificationCode``
    for a static code, ``scene``), under the caller's rights and the resident's consent."""
    require_staff(ctx.caller, "Patient", "r")
    scene_of(body)
    params = OperationInput(body, "$resolve-health-card")
    payload = _string(params, "qrCode")
    code = _string(params, "verificationCode", required=False)
    if verifier is None:
        raise FhirError.of(
            Category.NOT_IMPLEMENTED,
            "No e-health card verifier is configured here (EHR_HEALTH_CARD_VERIFIER)",
            code="not-supported",
        )
    assert payload is not None
    try:
        card = verifier.verify(payload, code)
    except CardRejectedError as exc:
        raise FhirError.of(Category.FORBIDDEN, f"Card refused: {exc}", code="security") from None
    keyring = ctx.services.identity.protection.keyring
    holder = store.holder_of(conn, keyring.blind(BLIND_PURPOSE, card.card_id))
    if holder is None:
        raise FhirError.of(Category.NOT_FOUND, "No resident holds this e-health card")
    return read.read(conn, ctx, "Patient", holder)
