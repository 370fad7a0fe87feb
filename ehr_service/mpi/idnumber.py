"""Resident ID numbers (GB 11643-1999): structure, check character, legacy upgrade.

An 18-character number is ``AAAAAA YYYYMMDD SSS C``: a six-digit administrative
division code (GB/T 2260), the holder's birth date, a three-digit sequence whose
last digit is odd for men and even for women, and a check character computed
with ISO 7064 MOD 11-2 (``0``-``9`` or ``X``). Numbers issued before 1999 have 15
digits (``AAAAAA YYMMDD SSS``, born in the 1900s) and upgrade to 18 by widening
the year and appending the check character.

Nothing here does I/O, and no message ever repeats the number it judged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from urllib.parse import unquote

ID_NUMBER_SYSTEM = "urn:oid:2.16.156.10011.1.3"

_CHECK_CHARACTERS = "10X98765432"

# Province-level codes of GB/T 2260 (the first two digits of every address code).
PROVINCE_CODES = frozenset(
    {
        "11", "12", "13", "14", "15",  # Beijing, Tianjin, Hebei, Shanxi, Inner Mongolia
        "21", "22", "23",  # Liaoning, Jilin, Heilongjiang
        "31", "32", "33", "34", "35", "36", "37",  # Shanghai ... Shandong
        "41", "42", "43", "44", "45", "46",  # Henan ... Hainan
        "50", "51", "52", "53", "54",  # Chongqing, Sichuan, Guizhou, Yunnan, Tibet
        "61", "62", "63", "64", "65",  # Shaanxi ... Xinjiang
        "71", "81", "82",  # Taiwan, Hong Kong, Macao
    }
)  # fmt: skip

_SHAPE_18 = re.compile(r"[0-9]{17}[0-9Xx]")
_SHAPE_15 = re.compile(r"[0-9]{15}")
# Anything shaped like an ID number inside longer text (for masking free text and logs).
CANDIDATE = re.compile(r"(?<![0-9])(?:[0-9]{17}[0-9Xx]|[0-9]{15})(?![0-9A-Za-z])")


class InvalidIdNumberError(ValueError):
    """The reason a value is not a resident ID number (never the value itself)."""


@dataclass(frozen=True, slots=True)
class IdNumber:
    normalised: str  # 18 characters, upper-case X
    birth_date: date
    sex: str  # "male" or "female" (FHIR administrative gender)
    legacy: bool  # written as a 15-digit number


def check_character(digits: str) -> str:
    """ISO 7064 MOD 11-2 over a string of digits (17 for an ID number): the digit
    ``n`` places from the right end (counting the check character as place 1)
    weighs 2^(n-1) mod 11."""
    size = len(digits)
    total = sum(int(digit) * pow(2, size - i, 11) for i, digit in enumerate(digits))
    return _CHECK_CHARACTERS[total % 11]


def _birth_date(digits: str) -> date:
    try:
        born = date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
    except ValueError:
        raise InvalidIdNumberError("its birth date digits are not a real date") from None
    if born.year < 1850:
        raise InvalidIdNumberError("its birth date digits are before 1850")
    return born


def parse_id_number(value: str, *, today: date | None = None) -> IdNumber:
    """Validate and normalise; raises :class:`InvalidIdNumberError` with the reason."""
    legacy = False
    if _SHAPE_15.fullmatch(value):
        legacy = True
        first17 = value[:6] + "19" + value[6:15]
        value = first17 + check_character(first17)
    elif not _SHAPE_18.fullmatch(value):
        raise InvalidIdNumberError(
            "a resident ID number has 18 characters (17 digits and a digit or X) "
            "or, before 1999, 15 digits"
        )
    value = value.upper()
    if value[:2] not in PROVINCE_CODES:
        raise InvalidIdNumberError("its address code names no province")
    if value[2:6] == "0000":
        raise InvalidIdNumberError("its address code names no city or county")
    born = _birth_date(value[6:14])
    if born > (today or date.today()):
        raise InvalidIdNumberError("its birth date digits are in the future")
    if not legacy and check_character(value[:17]) != value[17]:
        raise InvalidIdNumberError("its check character (ISO 7064 MOD 11-2) is wrong")
    return IdNumber(value, born, "male" if int(value[16]) % 2 else "female", legacy)


def is_id_number(value: str) -> bool:
    try:
        parse_id_number(value)
    except InvalidIdNumberError:
        return False
    return True


def mask(value: str) -> str:
    """``500101199001011234`` -> ``5001**********1234``: province, city and the last four."""
    if len(value) <= 8:
        return "*" * len(value)
    return value[:4] + "*" * (len(value) - 8) + value[-4:]


def is_masked(value: str) -> bool:
    return "*" in value


def mask_candidates(text: str) -> str:
    """Mask every ID-number-shaped run of digits in free text (logs, narratives,
    URLs: percent-encoded digits are decoded first, so they cannot hide one)."""
    if "%" in text:
        decoded = unquote(text)
        if CANDIDATE.search(decoded):
            text = decoded
    return CANDIDATE.sub(lambda m: mask(m.group(0)), text)
