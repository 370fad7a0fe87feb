"""Scoring a candidate Patient against a query Patient (for ``Patient/$match``).

An equal resident ID number is a certain match and a different one a certain
non-match. Otherwise the score (0 to 1) weighs:

========== ====== ===========================================================
name        0.35  as written (Chinese names without spaces, in either order for
                  Latin script), else by pinyin without tones (homophones score
                  less), else by similarity
birth date  0.30  equal; or the same year with month and day swapped or one digit off
gender      0.10  equal
phone       0.15  any number equal (digits only, country code ignored)
address     0.10  share of address parts (city, district, line) in common
========== ====== ===========================================================

Grades (the ``match-grade`` extension): ``certain`` (same ID number),
``probable`` (score at least 0.80), ``possible`` (at least 0.55); lower scores
are not returned.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from functools import lru_cache
from typing import Any

from ehr_service.mpi.idnumber import ID_NUMBER_SYSTEM, InvalidIdNumberError, parse_id_number

WEIGHTS = {"name": 0.35, "birthDate": 0.30, "gender": 0.10, "phone": 0.15, "address": 0.10}
PROBABLE = 0.80
MAX_PARTS = 10
POSSIBLE = 0.55
_HAN = re.compile(r"[\u3400-\u9fff]")
_NOT_LETTERS = re.compile(r"[^0-9a-z\u3400-\u9fff]")


@lru_cache(maxsize=65536)
def pinyin(text: str) -> str:
    """Tone-less pinyin of Han characters, Latin letters lower-cased, nothing else."""
    if not _HAN.search(text):
        return _NOT_LETTERS.sub("", text.lower())
    from pypinyin import lazy_pinyin  # loaded on first use (a large dictionary)

    return _NOT_LETTERS.sub("", "".join(lazy_pinyin(text)).lower())


def _plain(text: str) -> str:
    return _NOT_LETTERS.sub("", unicodedata.normalize("NFKC", text).lower())


@dataclass(slots=True)
class Person:
    """What matching compares, extracted once per resource."""

    names: set[str] = field(default_factory=set)  # full names as written, normalised
    spoken: set[str] = field(default_factory=set)  # their pinyin
    birth_date: str | None = None
    gender: str | None = None
    phones: set[str] = field(default_factory=set)
    address: set[str] = field(default_factory=set)
    id_numbers: set[str] = field(default_factory=set)  # normalised


def _full_names(name: dict[str, Any]) -> list[str]:
    family: str = name["family"] if isinstance(name.get("family"), str) else ""
    given = "".join(g for g in name.get("given") or () if isinstance(g, str))
    out = []
    if isinstance(name.get("text"), str):
        out.append(name["text"])
    if family or given:
        out.append(f"{family}{given}")  # Chinese order, no spaces
        if not _HAN.search(family + given):
            out.append(f"{given}{family}")  # Latin script: given names often first
    return out


def phone_digits(value: str) -> str:
    digits = re.sub(r"\D", "", value)
    if digits.startswith("86") and len(digits) == 13:
        digits = digits[2:]
    return digits


def person_of(resource: dict[str, Any]) -> Person:
    """``resource`` with ID numbers in clear (the query, or a revealed candidate)."""
    person = Person()
    # Bounded work whatever the input: a person has a few names, phones and addresses.
    for name in (resource.get("name") or ())[:MAX_PARTS]:
        if isinstance(name, dict):
            for full in _full_names(name):
                if plain := _plain(full):
                    person.names.add(plain)
                    person.spoken.add(pinyin(full))
    if isinstance(resource.get("birthDate"), str):
        person.birth_date = resource["birthDate"]
    if resource.get("gender") in {"male", "female", "other"}:
        person.gender = resource["gender"]
    for telecom in (resource.get("telecom") or ())[:MAX_PARTS]:
        if (
            isinstance(telecom, dict)
            and telecom.get("system") in {"phone", "sms", None}
            and isinstance(telecom.get("value"), str)
            and (digits := phone_digits(telecom["value"]))
        ):
            person.phones.add(digits)
    for address in (resource.get("address") or ())[:MAX_PARTS]:
        if isinstance(address, dict):
            parts = [address.get(k) for k in ("state", "city", "district", "text")]
            parts.extend(address.get("line") or ())
            person.address.update(_plain(p) for p in parts if isinstance(p, str) and _plain(p))
    for identifier in resource.get("identifier") or ():
        if isinstance(identifier, dict) and identifier.get("system") == ID_NUMBER_SYSTEM:
            try:
                person.id_numbers.add(parse_id_number(str(identifier.get("value"))).normalised)
            except InvalidIdNumberError:
                continue
    return person


def _name_score(query: Person, candidate: Person) -> float:
    if not query.names or not candidate.names:
        return 0.0
    if query.names & candidate.names:
        return 1.0
    if query.spoken & candidate.spoken:
        return 0.85
    best = max(SequenceMatcher(None, a, b).ratio() for a in query.spoken for b in candidate.spoken)
    return 0.7 * best if best >= 0.6 else 0.0


def _date_score(a: str | None, b: str | None) -> float:
    if not a or not b:
        return 0.0
    if a == b:
        return 1.0
    if len(a) == len(b) == 10 and a[:4] == b[:4]:
        if a[5:7] == b[8:10] and a[8:10] == b[5:7]:
            return 0.5  # month and day swapped
        if sum(x != y for x, y in zip(a, b, strict=True)) == 1:
            return 0.5  # one digit off
    return 0.0


def _address_score(a: set[str], b: set[str]) -> float:
    if not a or not b:
        return 0.0
    return len(a & b) / len(a | b)


def score(query: Person, candidate: Person) -> tuple[float, str]:
    """(score, grade); grade ``certainly-not`` for two different ID numbers."""
    if query.id_numbers and candidate.id_numbers:
        if query.id_numbers & candidate.id_numbers:
            return 1.0, "certain"
        return 0.0, "certainly-not"
    total = (
        WEIGHTS["name"] * _name_score(query, candidate)
        + WEIGHTS["birthDate"] * _date_score(query.birth_date, candidate.birth_date)
        + WEIGHTS["gender"] * (1.0 if query.gender and query.gender == candidate.gender else 0.0)
        + WEIGHTS["phone"] * (1.0 if query.phones & candidate.phones else 0.0)
        + WEIGHTS["address"] * _address_score(query.address, candidate.address)
    )
    total = round(total, 4)
    if total >= PROBABLE:
        return total, "probable"
    if total >= POSSIBLE:
        return total, "possible"
    return total, "certainly-not"
