"""National record identifiers of a resident (docs/architecture.md §6): the resident
health-record number this service assigns, and the resident health card number it
accepts.

The health-record number (城乡居民健康档案编号, WS 365) has 17 digits::

    CCCCCC TTT VVV SSSSS
    county township village sequence

a six-digit county-level administrative division code (GB/T 2260), the three-digit
township / street and village / neighbourhood committee codes (together the
12-digit statistical division code), and a five-digit sequence the issuing
authority numbers its records with, per township and village. The identifier
system is the national OID ``urn:oid:2.16.156.10011.1.2``.

The division comes from configuration (``EHR_RECORD_DIVISION_CODE``: 6, 9 or 12
digits; missing township and village parts are ``000``). A Patient whose address
carries the 12-digit (or 9-digit) division code of where it lives, under
:data:`DIVISION_URL`, takes its township and village from there when that code
lies in the configured county; otherwise the configured ones apply.

Nothing here does I/O.
"""

from __future__ import annotations

import re
from typing import Any

from ehr_service.fhir.errors import Category, FhirError
from ehr_service.mpi.idnumber import is_masked

HEALTH_RECORD_SYSTEM = "urn:oid:2.16.156.10011.1.2"
HEALTH_CARD_SYSTEM = "urn:oid:2.16.156.10011.1.19"
DIVISION_URL = "urn:ehr-service:extension:administrative-division"
SEQUENCE_DIGITS = 5
MAX_SEQUENCE = 10**SEQUENCE_DIGITS - 1

DIVISION_PATTERN = r"^[0-9]{6}([0-9]{3}([0-9]{3})?)?$"
_DIVISION = re.compile(DIVISION_PATTERN)
# The resident health card number (居民健康卡号): up to 18 digits and capital letters
# (data element format AN..18); an 18-character ID number used as the card number
# is sealed like every ID number (mpi.protection).
_HEALTH_CARD = re.compile(r"[0-9A-Z]{1,18}")

HEALTH_RECORD_TYPE = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/v2-0203",
            "code": "MR",
            "display": "Medical record number",
        }
    ],
    "text": "城乡居民健康档案编号",
}


def area_code(configured: str) -> str:
    """The 12-digit division of a configured 6, 9 or 12 digit code."""
    if not _DIVISION.match(configured):
        raise ValueError("a division code has 6, 9 or 12 digits")
    return configured.ljust(12, "0")


def _division_of(address: Any) -> str | None:
    if not isinstance(address, dict):
        return None
    for extension in address.get("extension") or ():
        if isinstance(extension, dict) and extension.get("url") == DIVISION_URL:
            code = extension.get("valueCode")
            if isinstance(code, str) and _DIVISION.match(code) and len(code) > 6:
                return code.ljust(12, "0")
    return None


def area_of(patient: dict[str, Any], configured: str) -> str:
    """The 12 division digits of a new record: the configured county, with the
    township and village of the Patient's address when it names them in that
    county (its home address first), else the configured ones."""
    area = area_code(configured)
    addresses = [a for a in patient.get("address") or () if isinstance(a, dict)]
    addresses.sort(key=lambda a: a.get("use") != "home")
    for address in addresses:
        division = _division_of(address)
        if division is not None and division[:6] == area[:6]:
            return division
    return area


def format_health_record_number(area: str, sequence: int) -> str:
    if not 1 <= sequence <= MAX_SEQUENCE:
        raise ValueError("the sequence of a health-record number has five digits")
    return f"{area}{sequence:0{SEQUENCE_DIGITS}d}"


def check_health_cards(resource: dict[str, Any]) -> None:
    """422 naming the element for a health card number of the wrong shape."""
    for index, identifier in enumerate(resource.get("identifier") or ()):
        if not isinstance(identifier, dict) or identifier.get("system") != HEALTH_CARD_SYSTEM:
            continue
        value = identifier.get("value")
        if isinstance(value, str) and is_masked(value):  # an ID number sent back masked
            continue
        if not isinstance(value, str) or not _HEALTH_CARD.fullmatch(value):
            raise FhirError.of(
                Category.UNPROCESSABLE,
                f"A resident health card number ({HEALTH_CARD_SYSTEM}) has 1 to 18 digits "
                "and capital letters",
                code="value",
                expression=[f"Patient.identifier[{index}].value"],
            )
