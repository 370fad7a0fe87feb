"""The identity of the caller, resolved once per request at one dependency point
(``api/deps.get_caller``) from its bearer token."""

from __future__ import annotations

from dataclasses import dataclass

from ehr_service.security.scopes import Grant, admin_roles


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling and what the token grants."""

    subject: str = "anonymous"
    client_id: str | None = None
    organization: str | None = None
    scopes: frozenset[str] = frozenset()
    grants: tuple[Grant, ...] = ()
    # A patient-bound token (SMART patient/ scopes): that patient's compartment only.
    patient: str | None = None
    # May read resident ID numbers unmasked (staff and systems; not citizens).
    sees_id_numbers: bool = False
    authenticated: bool = False
    # Internal work of the service itself (demo data, command line): no token, all rights.
    internal: bool = False
    purpose: str = "TREAT"  # purpose of use (v3 ActReason), from the token
    region: str | None = None  # the caller's region (e.g. sichuan for the partner region)
    # An operator at the command line: internal rights, but every write audited.
    operator: bool = False

    @property
    def admin_role(self) -> str | None:
        """sysadmin | secadmin | auditadmin: the one administrator role of the token
        (the verifier refuses a token naming two), None for every other caller."""
        roles = admin_roles(self.scopes)
        return next(iter(roles)) if len(roles) == 1 else None

    @property
    def is_admin(self) -> bool:
        """System administration (the legacy ``ehr/admin`` means this and only this)."""
        return self.internal or self.admin_role == "sysadmin"

    @property
    def is_audit_admin(self) -> bool:
        return self.internal or self.admin_role == "auditadmin"

    def may(self, resource_type: str, action: str) -> bool:
        """Does a scope grant ``action`` (one of c r u d s) on ``resource_type``?"""
        return self.internal or any(g.covers(resource_type, action) for g in self.grants)

    @property
    def kind(self) -> str:
        """patient | user | system | operator | internal | anonymous, for audit and policy."""
        if self.operator:
            return "operator"
        if self.internal:
            return "internal"
        if not self.authenticated:
            return "anonymous"
        if self.patient is not None:
            return "patient"
        contexts = {g.context for g in self.grants}
        return "system" if "system" in contexts else "user"


ANONYMOUS = Caller()
# The service acting on its own behalf (demo data, command line): never from a request.
SERVICE = Caller(subject="ehr-service", internal=True, sees_id_numbers=True, authenticated=True)


def operator(name: str) -> Caller:
    """The operator running an ``ehr-service`` command (named by the OS account)."""
    return Caller(
        subject=f"operator:{name[:64]}",
        internal=True,
        operator=True,
        sees_id_numbers=True,
        authenticated=True,
        purpose="HOPERAT",  # v3 ActReason: healthcare operations
    )
