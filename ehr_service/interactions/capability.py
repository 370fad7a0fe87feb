"""The CapabilityStatement (R4 §3.1.0.13): exactly what this server does.

Built once per process from the same tables the server dispatches with, so it
cannot claim an interaction that is not routed.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from ehr_service import __version__
from ehr_service.fhir.resource_types import R4_RESOURCE_TYPES
from ehr_service.interactions.patch import JSON_PATCH_MEDIA_TYPE

TYPE_INTERACTIONS = (
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history-instance",
    "history-type",
    "create",
)
SYSTEM_INTERACTIONS = ("transaction", "batch", "history-system")


@cache
def capability_statement(base_url: str, date: str) -> dict[str, Any]:
    resources = [
        {
            "type": resource_type,
            "interaction": [{"code": code} for code in TYPE_INTERACTIONS],
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": True,
            "conditionalCreate": False,
            "conditionalRead": "not-supported",
            "conditionalUpdate": False,
            "conditionalDelete": "not-supported",
        }
        for resource_type in sorted(R4_RESOURCE_TYPES)
    ]
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": date,
        "publisher": "ehr-service",
        "kind": "instance",
        "software": {"name": "ehr-service", "version": __version__},
        "implementation": {"description": "ehr-service FHIR R4 endpoint", "url": base_url},
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "patchFormat": [JSON_PATCH_MEDIA_TYPE],
        "rest": [
            {
                "mode": "server",
                "resource": resources,
                "interaction": [{"code": code} for code in SYSTEM_INTERACTIONS],
            }
        ],
    }
