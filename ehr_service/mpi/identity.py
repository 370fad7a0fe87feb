"""Resident identity on the write path: lifelong record numbers and protected ID numbers.

Every Patient carries a lifelong record number assigned here on its first version
(``<prefix><12 digits><MOD 11-2 check character>``, e.g. ``EHR000000000042X``):
clients cannot set, change or remove it, it never passes to another record, and
merges and ID number changes leave it alone.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from ehr_service.config import Settings
from ehr_service.fhir.errors import Category, FhirError
from ehr_service.mpi.idnumber import check_character
from ehr_service.mpi.protection import IdNumberProtection, Prepared
from ehr_service.security.ciphers import suite
from ehr_service.security.fieldcrypto import Keyring
from ehr_service.storage import identity as identity_store

RECORD_NUMBER_TYPE = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/v2-0203",
            "code": "MR",
            "display": "Medical record number",
        }
    ],
    "text": "居民健康档案号",
}


class ResidentIdentity:
    """What every Patient write goes through; one per process."""

    def __init__(self, settings: Settings, keyring: Keyring) -> None:
        self.protection = IdNumberProtection(keyring, suite(settings.crypto_suite))
        self.record_system = settings.record_number_system
        self.record_prefix = settings.record_number_prefix

    @classmethod
    def from_settings(cls, settings: Settings) -> ResidentIdentity:
        cipher = suite(settings.crypto_suite).cipher
        return cls(settings, Keyring.load_or_create(settings.effective_field_keys_file, cipher))

    def format_record_number(self, number: int) -> str:
        digits = f"{number:012d}"
        return f"{self.record_prefix}{digits}{check_character(digits)}"

    def record_number_in(self, resource: dict[str, Any]) -> str | None:
        for identifier in resource.get("identifier") or ():
            if isinstance(identifier, dict) and identifier.get("system") == self.record_system:
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
        prepared = self.protection.prepare(resource, previous)  # client's positions in errors
        if resource.get("resourceType") == "Patient":
            self._keep_record_number(conn, resource, previous)
        return prepared

    def _keep_record_number(
        self, conn: Connection, resource: dict[str, Any], previous: dict[str, Any] | None
    ) -> None:
        own = self.record_number_in(previous) if previous is not None else None
        if own is None:
            own = self.format_record_number(
                identity_store.allocate_record_number(conn, str(resource["id"]))
            )
        identifiers = [i for i in resource.get("identifier") or () if isinstance(i, dict)]
        mine = [i for i in identifiers if i.get("system") == self.record_system]
        if previous is not None and any(i.get("value") != own for i in mine):
            raise FhirError.of(
                Category.UNPROCESSABLE,
                f"The lifelong record number ({self.record_system}) is assigned by the "
                "server and cannot change",
                code="business-rule",
                expression=["Patient.identifier"],
            )
        others = [i for i in identifiers if i.get("system") != self.record_system]
        kept = next((i for i in mine if i.get("value") == own), None)
        record = kept or {
            "use": "official",
            "type": RECORD_NUMBER_TYPE,
            "system": self.record_system,
            "value": own,
        }
        resource["identifier"] = [*others, record]  # the client's identifiers keep their places
