"""SMART App Launch scopes (v2 ``context/Type.cruds``, v1 ``.read/.write/.*`` mapped).

A scope with a query part (``patient/Observation.rs?category=laboratory``) narrows
what it grants in a way this server does not evaluate: it grants nothing (fail
closed). Unknown scopes (``openid``, ``launch/patient``...) grant nothing either.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from ehr_service.fhir.resource_types import R4_RESOURCE_TYPES

CONTEXTS = ("patient", "user", "system")
# The three administrators of GB/T 22239-2019 level 3 (docs/architecture.md §9): one
# token holds at most one of these roles, and the audit administrator nothing else.
SYSADMIN_SCOPE = "ehr/sysadmin"  # operations: merge, every resident's record, import/export
SECADMIN_SCOPE = "ehr/secadmin"  # security: keys, partners, tokens, the sharing policy
AUDITADMIN_SCOPE = "ehr/auditadmin"  # reading and verifying the audit trail, nothing else
# Deprecated names, accepted with the role they now mean: ``ehr/admin`` was every
# administrative right including reading the trail; it is the system administrator only.
ADMIN_SCOPE = "ehr/admin"
AUDIT_SCOPE = "ehr/audit"
ROLE_OF_SCOPE = {
    SYSADMIN_SCOPE: "sysadmin",
    SECADMIN_SCOPE: "secadmin",
    AUDITADMIN_SCOPE: "auditadmin",
    ADMIN_SCOPE: "sysadmin",
    AUDIT_SCOPE: "auditadmin",
}
DEPRECATED_SCOPES = {ADMIN_SCOPE: SYSADMIN_SCOPE, AUDIT_SCOPE: AUDITADMIN_SCOPE}
# The operations dashboard (/dashboard), read-only aggregates: not an administrator role.
OPERATIONS_SCOPE = "ehr/operations"
SERVICE_SCOPES = (SYSADMIN_SCOPE, SECADMIN_SCOPE, AUDITADMIN_SCOPE, ADMIN_SCOPE, AUDIT_SCOPE,
                  OPERATIONS_SCOPE)  # fmt: skip
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


def admin_roles(scopes: Iterable[str]) -> frozenset[str]:
    """The administrator roles (sysadmin, secadmin, auditadmin) these scopes name."""
    return frozenset(ROLE_OF_SCOPE[s] for s in scopes if s in ROLE_OF_SCOPE)


def role_conflict(text: str) -> str | None:
    """Why one token may not carry these scopes (None: it may): two administrator
    roles, or the audit administrator with any other right (separation of duties,
    GB/T 22239-2019 level 3)."""
    scopes = text.split()
    roles = admin_roles(scopes)
    if len(roles) > 1:
        named = ", ".join(sorted(s for s in scopes if s in ROLE_OF_SCOPE))
        return (
            f"One token may hold one administrator role only, not {' and '.join(sorted(roles))} "
            f"({named}): system, security and audit administration are separate duties"
        )
    if "auditadmin" in roles and parse_scopes(text):
        return (
            "The audit administrator's token reads and verifies the audit trail only: "
            "it may not also carry patient/, user/ or system/ scopes"
        )
    return None
