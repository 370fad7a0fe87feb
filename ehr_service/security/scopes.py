"""SMART App Launch scopes (v2 ``context/Type.cruds``, v1 ``.read/.write/.*`` mapped).

A scope with a query part (``patient/Observation.rs?category=laboratory``) narrows
what it grants in a way this server does not evaluate: it grants nothing (fail
closed). Unknown scopes (``openid``, ``launch/patient``...) grant nothing either.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ehr_service.fhir.resource_types import R4_RESOURCE_TYPES

CONTEXTS = ("patient", "user", "system")
ADMIN_SCOPE = "ehr/admin"  # administrative operations (merge, reindex, exports)
AUDIT_SCOPE = "ehr/audit"  # reading the audit trail (GET /fhir/AuditEvent)
OPERATIONS_SCOPE = "ehr/operations"  # the operations dashboard (/dashboard), read-only
SERVICE_SCOPES = (ADMIN_SCOPE, AUDIT_SCOPE, OPERATIONS_SCOPE)
_SCOPE = re.compile(r"(patient|user|system)/(\*|[A-Z][A-Za-z]+)\.([a-z*]+)")
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}
_ACTIONS = set("cruds")


@dataclass(frozen=True, slots=True)
class Grant:
    context: str  # patient | user | system
    resource_type: str  # a type or "*"
    actions: frozenset[str]  # subset of c r u d s

    def covers(self, resource_type: str, action: str) -> bool:
        return action in self.actions and self.resource_type in {"*", resource_type}


def parse_scopes(text: str) -> tuple[Grant, ...]:
    grants = []
    for scope in text.split():
        match = _SCOPE.fullmatch(scope)
        if match is None:
            continue
        context, resource_type, permissions = match.groups()
        if resource_type != "*" and resource_type not in R4_RESOURCE_TYPES:
            continue
        actions = _V1.get(permissions, permissions)
        if (
            not set(actions) <= _ACTIONS
            or len(set(actions)) != len(actions)
            or list(actions) != sorted(actions, key="cruds".index)
        ):
            continue  # v2 letters must be in c r u d s order, each once
        grants.append(Grant(context, resource_type, frozenset(actions)))
    return tuple(grants)


def ungranted(text: str) -> list[str]:
    """The scopes of ``text`` that grant nothing here: unknown (``openid``, a typo),
    malformed (letters out of order, an unknown type) or with a query part."""
    return [s for s in text.split() if s not in SERVICE_SCOPES and not parse_scopes(s)]
