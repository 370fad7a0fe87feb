"""The CapabilityStatement (R4 §3.1.0.13): exactly what this server does.

Built from the same tables the server works with, so it cannot claim what is not
served: the search parameters the engine applies, ``_include``/``_revinclude``
from the reference parameters it indexes, the operations it routes
(:mod:`ehr_service.interactions.capability_operations`) with the definitions it
serves, and the SMART endpoints of ``.well-known/smart-configuration``
(:mod:`ehr_service.security.smart`). ``tests/api/test_capability.py`` calls every
claim.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from ehr_service import __version__
from ehr_service.audit.search import PARAMETERS as AUDIT_PARAMETERS
from ehr_service.config import Settings
from ehr_service.fhir.operations import OperationDefinitions
from ehr_service.fhir.resource_types import R4_RESOURCE_TYPES
from ehr_service.fhir.search.registry import COLUMN_PARAMETERS, SearchParameterRegistry
from ehr_service.interactions.capability_operations import system_operations, type_operations
from ehr_service.interactions.operation_definitions import SEARCH_PARAMETERS as DEFINITION_SEARCH
from ehr_service.interactions.patch import PATCH_FORMATS
from ehr_service.pipeline.core import READ_ONLY_TYPES
from ehr_service.security import smart

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
# Response and body formats (application/fhir+xml through api/negotiation.py).
FORMATS = ("application/fhir+json", "application/fhir+xml")
BULK_DATA = "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"
IMPLEMENTATION_GUIDES = (
    "http://hl7.org/fhir/uv/bulkdata/ImplementationGuide/hl7.fhir.uv.bulkdata",
    "http://hl7.org/fhir/smart-app-launch/ImplementationGuide/hl7.fhir.uv.smart-app-launch",
)
SECURITY_SERVICE = "http://terminology.hl7.org/CodeSystem/restful-security-service"

PROFILED = {
    "Patient": ["urn:ehr-service:StructureDefinition/resident-patient"],
    "Observation": ["urn:ehr-service:StructureDefinition/recognized-lab-observation"],
    "DiagnosticReport": ["urn:ehr-service:StructureDefinition/recognized-imaging-report"],
    "ImagingStudy": ["urn:ehr-service:StructureDefinition/recognized-imaging-study"],
    "Organization": ["urn:ehr-service:StructureDefinition/recognition-institution"],
    "Practitioner": ["urn:ehr-service:StructureDefinition/recognition-practitioner"],
}
READ_ONLY = {
    "versioning": "no-version",
    "readHistory": False,
    "updateCreate": False,
    "conditionalCreate": False,
    "conditionalRead": "not-supported",
    "conditionalUpdate": False,
    "conditionalDelete": "not-supported",
}
# The types searched by the generic engine: the read-only ones have searches of their own.
SEARCHED = tuple(sorted(R4_RESOURCE_TYPES - READ_ONLY_TYPES))


def _search_params(registry: SearchParameterRegistry, resource_type: str) -> list[dict[str, Any]]:
    """Only the parameters the search engine really applies to this type."""
    out = []
    for code, parameter in sorted(registry.for_type(resource_type).items()):
        if not parameter.stored_as and code not in COLUMN_PARAMETERS:
            continue
        out.append({"name": code, "definition": parameter.url, "type": parameter.type})
    return out


def _params(registry: SearchParameterRegistry, resource_type: str, names: Any) -> list[Any]:
    known = registry.for_type(resource_type)
    return [
        {"name": name, "definition": known[name].url, "type": known[name].type}
        for name in names
        if name in known
    ]


def _includes(registry: SearchParameterRegistry, resource_type: str) -> list[str]:
    """``_include`` values: the indexed reference parameters of the type, and ``*``."""
    return [
        f"{resource_type}:*",
        *sorted(
            f"{resource_type}:{p.code}"
            for p in registry.indexed(resource_type)
            if p.type == "reference"
        ),
    ]


def _revincludes(registry: SearchParameterRegistry, target: str) -> list[str]:
    """``_revinclude`` values: the indexed reference parameters of every searched
    type that may point at ``target``."""
    return sorted(
        f"{source}:{p.code}"
        for source in SEARCHED
        for p in registry.indexed(source)
        if p.type == "reference" and (not p.targets or target in p.targets)
    )


def _read_only_entry(
    registry: SearchParameterRegistry, definitions: OperationDefinitions, resource_type: str
) -> dict[str, Any]:
    if resource_type == "AuditEvent":
        documentation = "The audit trail, read-only (ehr/audit scope); writes are 405"
        names: Any = AUDIT_PARAMETERS
    else:
        documentation = "The definitions of this server's operations: read-only, any valid token"
        names = [n for n in DEFINITION_SEARCH if ":" not in n]
    entry: dict[str, Any] = {
        "type": resource_type,
        "documentation": documentation,
        "interaction": [{"code": "read"}, {"code": "search-type"}],
        "searchParam": _params(registry, resource_type, names),
        **READ_ONLY,
    }
    operations = type_operations(definitions, resource_type, generic=False)
    if operations:
        entry["operation"] = operations
    return entry


def _entry(
    registry: SearchParameterRegistry, definitions: OperationDefinitions, resource_type: str
) -> dict[str, Any]:
    if resource_type in READ_ONLY_TYPES:
        return _read_only_entry(registry, definitions, resource_type)
    entry: dict[str, Any] = {
        "type": resource_type,
        "interaction": [{"code": code} for code in TYPE_INTERACTIONS],
        "versioning": "versioned-update",
        "readHistory": True,
        "updateCreate": True,
        "conditionalCreate": True,
        "conditionalRead": "not-supported",
        "conditionalUpdate": True,
        "conditionalDelete": "single",
        "searchInclude": _includes(registry, resource_type),
        "searchRevInclude": _revincludes(registry, resource_type),
        "searchParam": _search_params(registry, resource_type),
        "operation": type_operations(definitions, resource_type, generic=True),
    }
    if resource_type in PROFILED:
        entry["supportedProfile"] = PROFILED[resource_type]
    if not entry["searchRevInclude"]:
        del entry["searchRevInclude"]
    return entry


@cache
def _resources(
    registry: SearchParameterRegistry, definitions: OperationDefinitions
) -> tuple[dict[str, Any], ...]:
    return tuple(_entry(registry, definitions, t) for t in sorted(R4_RESOURCE_TYPES))


def security(settings: Settings) -> dict[str, Any]:
    """``rest.security``: SMART on FHIR, with the endpoints the SMART configuration
    names; CORS only when browsers' origins are configured."""
    out: dict[str, Any] = {}
    uris = smart.oauth_uris(smart.smart_configuration(settings))
    if uris is not None:
        out["extension"] = [uris]
    out["cors"] = bool(settings.cors_origins)
    out["service"] = [
        {
            "coding": [{"system": SECURITY_SERVICE, "code": "SMART-on-FHIR"}],
            "text": "SMART App Launch v2 and SMART Backend Services bearer tokens",
        }
    ]
    out["description"] = smart.SCOPES_DESCRIPTION
    return out


def capability_statement(
    settings: Settings,
    registry: SearchParameterRegistry,
    definitions: OperationDefinitions,
    base_url: str,
    date: str,
) -> dict[str, Any]:
    return {
        "resourceType": "CapabilityStatement",
        "url": f"{base_url}/metadata",
        "name": "EhrService",
        "title": "ehr-service FHIR R4 endpoint",
        "status": "active",
        "date": date,
        "publisher": "ehr-service",
        "kind": "instance",
        "instantiates": [BULK_DATA],
        "software": {"name": "ehr-service", "version": __version__},
        "implementation": {"description": "ehr-service FHIR R4 endpoint", "url": base_url},
        "fhirVersion": "4.0.1",
        "format": list(FORMATS),
        "patchFormat": list(PATCH_FORMATS),
        "implementationGuide": list(IMPLEMENTATION_GUIDES),
        "rest": [
            {
                "mode": "server",
                "security": security(settings),
                "resource": list(_resources(registry, definitions)),
                "interaction": [{"code": code} for code in SYSTEM_INTERACTIONS],
                "operation": system_operations(definitions),
            }
        ],
    }
