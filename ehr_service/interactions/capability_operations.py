"""The operations this server routes, as the CapabilityStatement lists them.

One row per operation and place (the system, or resource types): its name as
invoked (``$name``), the canonical url of its OperationDefinition (served at
``/fhir/OperationDefinition/{id}``, :mod:`ehr_service.fhir.operations`) and what
this server adds about it. The levels it is invoked at (system, type, instance)
are the definition's own; ``tests/api/test_capability.py`` checks the rows
against the application's routes, both ways.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ehr_service.fhir.operations import OperationDefinition, OperationDefinitions

HL7 = "http://hl7.org/fhir/OperationDefinition/"
BULK_DATA = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/"
PIXM = "https://profiles.ihe.net/ITI/PIXm/OperationDefinition/IHE.PIXm.pix"
OWN = "urn:ehr-service:OperationDefinition/"
EVERY_TYPE = ("*",)  # every type with the generic interactions (not the read-only ones)

_EXPORT = (
    "Asynchronous (Prefer: respond-async), by GET or by POST of a Parameters body: 202 with "
    "the status URL in Content-Location; NDJSON files (application/fhir+ndjson) of the types "
    "the token may read; _type, _since, _typeFilter (searches, ORed per type), _elements and "
    "patient applied; includeAssociatedData is not offered: a 400, or ignored and reported "
    "in the manifest's error file with Prefer: handling=lenient; not for patient tokens"
)
_CATALOGUE = "Over the recognition catalogue (its CodeSystem, ValueSets and ConceptMap)"


@dataclass(frozen=True, slots=True)
class Offered:
    name: str  # as invoked: [base]/.../$name
    definition: str  # canonical url of its OperationDefinition
    types: tuple[str, ...] | None  # None: at the system level
    documentation: str | None = None


OPERATIONS = (
    Offered("export", f"{BULK_DATA}export", None, _EXPORT),
    Offered(
        "recognition-stats",
        f"{OWN}recognition-stats",
        None,
        "Offered, accepted and re-tested results, tests and cost avoided",
    ),
    Offered("export", f"{BULK_DATA}patient-export", ("Patient",), _EXPORT),
    Offered("export", f"{BULK_DATA}group-export", ("Group",), _EXPORT),
    Offered(
        "everything",
        f"{HL7}Patient-everything",
        ("Patient",),
        "Paged (_count, _since, _type); every resident's record (type level) needs ehr/admin",
    ),
    Offered(
        "match",
        f"{HL7}Patient-match",
        ("Patient",),
        "Scored with match-grade: an equal resident ID number is certain",
    ),
    Offered(
        "merge",
        f"{HL7}Patient-merge",
        ("Patient",),
        "The FHIR R5 Patient merge, offered on R4; preview supported; ehr/admin",
    ),
    Offered("ihe-pix", PIXM, ("Patient",), "IHE PIXm [ITI-83], GET or POST"),
    Offered(
        "resolve-health-card",
        f"{OWN}resolve-health-card",
        ("Patient",),
        "The Patient of a scanned e-health card, each use audited with its scene code; "
        "501 unless a card verifier is configured (EHR_HEALTH_CARD_VERIFIER)",
    ),
    Offered(
        "bind-health-card",
        f"{OWN}bind-health-card",
        ("Patient",),
        "Bind an e-health card to one resident (stored blind-indexed and sealed)",
    ),
    Offered(
        "recognizable-results",
        f"{OWN}recognizable-results",
        ("Patient",),
        "Prior results of the items asked for, recognisable or not, and why",
    ),
    Offered(
        "recognition-decision",
        f"{OWN}recognition-decision",
        ("Patient",),
        "The decision for an order: accepted, or retest with a reason",
    ),
    Offered("lookup", f"{HL7}CodeSystem-lookup", ("CodeSystem",), _CATALOGUE),
    Offered("validate-code", f"{HL7}CodeSystem-validate-code", ("CodeSystem",), _CATALOGUE),
    Offered("expand", f"{HL7}ValueSet-expand", ("ValueSet",), _CATALOGUE),
    Offered("validate-code", f"{HL7}ValueSet-validate-code", ("ValueSet",), _CATALOGUE),
    Offered("translate", f"{HL7}ConceptMap-translate", ("ConceptMap",), _CATALOGUE),
    Offered(
        "inclusion-proof",
        f"{OWN}inclusion-proof",
        ("AuditEvent",),
        "The event's Merkle proof in a signed block, once sealed; ehr/audit",
    ),
    Offered(
        "validate",
        f"{HL7}Resource-validate",
        EVERY_TYPE,
        "The checks of a write (model, required bindings) and a profile; never stored",
    ),
)


def _where(definition: OperationDefinition, name: str, resource_type: str | None) -> str:
    """The URLs it answers at, from its definition's levels."""
    paths = []
    if definition.system:
        paths.append(f"[base]/${name}")
    if resource_type is not None and definition.type:
        paths.append(f"[base]/{resource_type}/${name}")
    if resource_type is not None and definition.instance:
        paths.append(f"[base]/{resource_type}/[id]/${name}")
    return ", ".join(paths)


def entry(
    offered: Offered, definitions: OperationDefinitions, resource_type: str | None
) -> dict[str, Any]:
    """``rest.operation`` or ``rest.resource.operation``: its definition must be one
    the server serves (else the statement is refused: it would not resolve)."""
    definition = definitions.find(offered.definition)
    if definition is None:
        raise LookupError(f"${offered.name}: no OperationDefinition {offered.definition}")
    where = _where(definition, offered.name, resource_type)
    text = f"{offered.documentation}; {where}" if offered.documentation else where
    return {"name": offered.name, "definition": offered.definition, "documentation": text}


def system_operations(definitions: OperationDefinitions) -> list[dict[str, Any]]:
    return [entry(o, definitions, None) for o in OPERATIONS if o.types is None]


def type_operations(
    definitions: OperationDefinitions, resource_type: str, generic: bool
) -> list[dict[str, Any]]:
    """The operations of one type; ``generic``: it has the generic interactions."""
    return [
        entry(o, definitions, resource_type)
        for o in OPERATIONS
        if o.types is not None and (resource_type in o.types or (generic and o.types == EVERY_TYPE))
    ]
