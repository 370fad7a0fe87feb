"""The CapabilityStatement (R4 §3.1.0.13): exactly what this server does.

Built once per process from the same tables the server dispatches with, so it
cannot claim an interaction that is not routed.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from ehr_service import __version__
from ehr_service.audit.search import PARAMETERS as AUDIT_PARAMETERS
from ehr_service.fhir.resource_types import R4_RESOURCE_TYPES
from ehr_service.fhir.search.registry import COLUMN_PARAMETERS, SearchParameterRegistry
from ehr_service.interactions.patch import PATCH_FORMATS

TYPE_INTERACTIONS = (
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
)
SYSTEM_INTERACTIONS = ("transaction", "batch", "history-system")
TERMINOLOGY_OPERATIONS = {
    "CodeSystem": [("lookup", "CodeSystem-lookup"), ("validate-code", "CodeSystem-validate-code")],
    "ValueSet": [("expand", "ValueSet-expand"), ("validate-code", "ValueSet-validate-code")],
    "ConceptMap": [("translate", "ConceptMap-translate")],
}


def _search_params(registry: SearchParameterRegistry, resource_type: str) -> list[dict[str, Any]]:
    """Only the parameters the search engine really applies to this type."""
    out = []
    for code, parameter in sorted(registry.for_type(resource_type).items()):
        if not parameter.stored_as and code not in COLUMN_PARAMETERS:
            continue
        out.append({"name": code, "definition": parameter.url, "type": parameter.type})
    return out


PROFILED = {
    "Patient": ["urn:ehr-service:StructureDefinition/resident-patient"],
    "Observation": ["urn:ehr-service:StructureDefinition/recognized-lab-observation"],
    "DiagnosticReport": ["urn:ehr-service:StructureDefinition/recognized-imaging-report"],
    "ImagingStudy": ["urn:ehr-service:StructureDefinition/recognized-imaging-study"],
}


def _audit_event(registry: SearchParameterRegistry) -> dict[str, Any]:
    """AuditEvent is the service's own hash-chained trail: read and search only."""
    known = registry.for_type("AuditEvent")
    return {
        "type": "AuditEvent",
        "documentation": "The audit trail, read-only (ehr/audit scope); writes are 405",
        "interaction": [{"code": "read"}, {"code": "search-type"}],
        "searchParam": [
            {"name": name, "definition": known[name].url, "type": known[name].type}
            for name in AUDIT_PARAMETERS
            if name in known
        ],
        "versioning": "no-version",
        "readHistory": False,
        "updateCreate": False,
        "conditionalCreate": False,
        "conditionalRead": "not-supported",
        "conditionalUpdate": False,
        "conditionalDelete": "not-supported",
    }


def capability_statement(
    base_url: str, date: str, registry: SearchParameterRegistry
) -> dict[str, Any]:
    return _capability_statement(base_url, date, registry)


@cache
def _capability_statement(
    base_url: str, date: str, registry: SearchParameterRegistry
) -> dict[str, Any]:
    resources = [
        {
            "type": resource_type,
            "interaction": [{"code": code} for code in TYPE_INTERACTIONS],
            "searchInclude": [
                f"{resource_type}:*",
                *sorted(
                    f"{resource_type}:{p.code}"
                    for p in registry.for_type(resource_type).values()
                    if p.type == "reference" and p.extract is not None
                ),
            ],
            "searchParam": _search_params(registry, resource_type),
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": True,
            "conditionalCreate": True,
            "conditionalRead": "not-supported",
            "conditionalUpdate": True,
            "conditionalDelete": "single",
        }
        for resource_type in sorted(R4_RESOURCE_TYPES)
    ]
    audit = next(r for r in resources if r["type"] == "AuditEvent")
    audit.clear()
    audit.update(_audit_event(registry))
    for resource_type, offered in TERMINOLOGY_OPERATIONS.items():
        entry = next(r for r in resources if r["type"] == resource_type)
        entry["operation"] = [
            {"name": name, "definition": f"http://hl7.org/fhir/OperationDefinition/{definition}",
             "documentation": "Over the recognition catalogue"}
            for name, definition in offered
        ]  # fmt: skip
    patient = next(r for r in resources if r["type"] == "Patient")
    patient["operation"] = [
        {
            "name": "everything",
            "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything",
        },
        {
            "name": "match",
            "definition": "http://hl7.org/fhir/OperationDefinition/Patient-match",
            "documentation": "Scored with match-grade: an equal resident ID number is certain",
        },
        {
            "name": "merge",
            "definition": "http://hl7.org/fhir/OperationDefinition/Patient-merge",
            "documentation": "The FHIR R5 Patient merge, offered on R4; preview supported",
        },
        {
            "name": "ihe-pix",
            "definition": "https://profiles.ihe.net/ITI/PIXm/OperationDefinition/IHE.PIXm.pix",
        },
        {
            "name": "recognizable-results",
            "definition": "urn:ehr-service:OperationDefinition/recognizable-results",
            "documentation": "Prior results of the items asked for, recognisable or not, and why",
        },
        {
            "name": "recognition-decision",
            "definition": "urn:ehr-service:OperationDefinition/recognition-decision",
            "documentation": "The decision for an order: accepted, or retest with a reason",
        },
    ]
    validate = {
        "name": "validate",
        "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate",
    }
    for resource in resources:
        operations: list[dict[str, Any]] = resource.setdefault("operation", [])  # type: ignore[assignment]
        operations.append(validate)
        if resource["type"] in PROFILED:
            resource["supportedProfile"] = PROFILED[resource["type"]]
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": date,
        "publisher": "ehr-service",
        "kind": "instance",
        "software": {"name": "ehr-service", "version": __version__},
        "implementation": {"description": "ehr-service FHIR R4 endpoint", "url": base_url},
        "fhirVersion": "4.0.1",
        "format": ["json", "xml"],
        "patchFormat": list(PATCH_FORMATS),
        "rest": [
            {
                "mode": "server",
                "resource": resources,
                "operation": [
                    {
                        "name": "recognition-stats",
                        "definition": "urn:ehr-service:OperationDefinition/recognition-stats",
                    }
                ],
                "interaction": [{"code": code} for code in SYSTEM_INTERACTIONS],
            }
        ],
    }
