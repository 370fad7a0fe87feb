"""The identity of the caller, resolved once per request at one dependency point."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling. Until bearer tokens are enforced every caller is anonymous."""

    subject: str = "anonymous"
    client_id: str | None = None
    organization: str | None = None
    scopes: frozenset[str] = frozenset()
    # May read resident ID numbers unmasked. Until bearer tokens are enforced the one
    # caller is the trusted hospital-system caller of development set-ups.
    sees_id_numbers: bool = True


ANONYMOUS = Caller()
