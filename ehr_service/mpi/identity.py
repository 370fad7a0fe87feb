"""Resident identity on the write path: health-record numbers and protected ID numbers.

Every Patient carries a national health-record number (WS 365, 17 digits, system
``urn:oid:2.16.156.10011.1.2``, :mod:`ehr_service.mpi.record_numbers`) assigned here
on its first version: clients cannot set, change or remove it, it never passes to
another record, and merges and ID number changes leave it alone. A record that
had a private record number before (``EHR_RECORD_NUMBER_SYSTEM``) keeps it, as an
identifier of use ``old``, on the same terms. Resident health card numbers
(``urn:oid:2.16.156.10011.1.19``) are checked for shape.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from ehr_service.config import Settings
from ehr_service.fhir.errors import Category, FhirError
from ehr_service.mpi.protection import IdNumberProtection, Prepared
from ehr_service.mpi.record_numbers import (
    HEALTH_RECORD_SYSTEM,
    HEALTH_RECORD_TYPE,
    area_of,
    check_health_cards,
    format_health_record_number,
)
from ehr_service.security.ciphers import suite
from ehr_service.security.fieldcrypto import Keyring
from ehr_service.storage import record_numbers as number_store


def identifiers_of(resource: dict[str, Any] | None, system: str) -> list[dict[str, Any]]:
    return [
        i
        for i in (resource or {}).get("identifier") or ()
        if isinstance(i, dict) and i.get("system") == system
    ]


class ResidentIdentity:
    """What every Patient write goes through; one per process."""

    def __init__(self, settings: Settings, keyring: Keyring) -> None:
        self.protection = IdNumberProtection(keyring, suite(settings.crypto_suite))
        self.record_system = HEALTH_RECORD_SYSTEM
        self.legacy_system = settings.record_number_system
        self.division = settings.record_division_code

    @classmethod
    def from_settings(cls, settings: Settings) -> ResidentIdentity:
        cipher = suite(settings.crypto_suite).cipher
        return cls(settings, Keyring.load_or_create(settings.effective_field_keys_file, cipher))

    @property
    def server_systems(self) -> frozenset[str]:
        """Identifier systems only the server writes on a Patient."""
        return frozenset({self.record_system, self.legacy_system})

    def record_number_in(self, resource: dict[str, Any]) -> str | None:
        for identifier in identifiers_of(resource, self.record_system):
            value = identifier.get("value")
            return value if isinstance(value, str) else None
        return None

    def prepare(
        self,
        conn: Connection,
        resource: dict[str, Any],
        previous: dict[str, Any] | None,
    ) -> Prepared:
        """Check and tokenise a resource about to be stored (``previous``: the stored
        form of the version it replaces)."""
        if resource.get("resourceType") == "Patient":
            check_health_cards(resource)
        prepared = self.protection.prepare(resource, previous)  # client's positions in errors
        if resource.get("resourceType") == "Patient":
            self._keep_record_numbers(conn, resource, previous)
        return prepared

    def _keep_record_numbers(
        self, conn: Connection, resource: dict[str, Any], previous: dict[str, Any] | None
    ) -> None:
        own = self.record_number_in(previous) if previous is not None else None
        if own is None:
            area = area_of(resource, self.division)
            own = number_store.allocate_health_record_number(
                conn, str(resource["id"]), area, format_health_record_number
            )
        record = {"use": "official", "type": HEALTH_RECORD_TYPE, "system": self.record_system,
                  "value": own}  # fmt: skip
        kept = [self._kept(resource, previous, self.record_system, [record])]
        old = identifiers_of(previous, self.legacy_system)  # stored with use old
        kept.append(self._kept(resource, previous, self.legacy_system, old))
        others = [
            i
            for i in resource.get("identifier") or ()
            if isinstance(i, dict) and i.get("system") not in self.server_systems
        ]
        resource["identifier"] = [*others, *(i for group in kept for i in group)]

    def _kept(
        self,
        resource: dict[str, Any],
        previous: dict[str, Any] | None,
        system: str,
        stored: list[dict[str, Any]],
    ) -> list[dict[str, Any]]:
        """The server's identifiers of ``system``: a client may send them back (as
        they are, or with other elements) but not change their values."""
        values = {i.get("value") for i in stored}
        sent = identifiers_of(resource, system)
        if previous is not None and any(i.get("value") not in values for i in sent):
            raise FhirError.of(
                Category.UNPROCESSABLE,
                f"The record numbers of {system} are assigned by the server and cannot change",
                code="business-rule",
                expression=["Patient.identifier"],
            )
        return [next((i for i in sent if i.get("value") == s.get("value")), s) for s in stored]
