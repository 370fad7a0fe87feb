"""Institution and practitioner master data (docs/architecture.md §7), aligned with the
Chongqing core IG draft (canonical ``http://fhir.cq.hc``, profile
``hc-healthcare-organization``): identifiers sliced by type, the WS 218 institution
type, hospital grade and district as the IG's extensions. Our recognition
extensions (region, level, quality control) sit beside them.

An Organization's

- unified social credit code (统一社会信用代码, GB 32100-2015): 18 characters of
  the code alphabet ``0-9 A-Z`` without ``I O Z S V``; characters 3-8 the
  registering authority's division code (digits); character 18 the check
  character: ``31 - (sum of value(c_i) * 3^(i-1) mod 31) mod 31``, mapped back
  into the alphabet (0 for 31);
- practising-licence registration number (医疗机构执业许可证登记号): digits,
  capital letters and ``-`` (the IG's rule ``miplrn-encodingrule-format``);
- institution type (WS 218-2002 third-level code, e.g. ``A100``), hospital grade
  (the IG's 14 codes) and district (6-digit county-level division code).

A Practitioner's practising-certificate number (医师执业证书编码): 15 digits.

Checked on every write (the ``institution-master-data`` hook): a bad value is a
422 naming the element. Nothing here does I/O.
"""

from __future__ import annotations

import re
from typing import Any

from ehr_service.fhir.errors import Category, FhirError

IG = "http://fhir.cq.hc"
IDENTIFIER_TYPES = f"{IG}/CodeSystem/identifierType-code-system"
INSTITUTION_TYPE_URL = f"{IG}/StructureDefinition/hc-mdm-healthcareinstitutionstype"
INSTITUTION_TYPES = f"{IG}/CodeSystem/healthcareinstitutionstype-code-system"
HOSPITAL_GRADE_URL = f"{IG}/StructureDefinition/hc-mdm-hospitallevel"
HOSPITAL_GRADES = f"{IG}/CodeSystem/cn-hospitalleve-code-system"
DISTRICT_URL = f"{IG}/StructureDefinition/hc-mdm-administrativedivision"
DISTRICTS = f"{IG}/CodeSystem/cq-administrativedivision-code-system"
PRACTISING_CERTIFICATE_SYSTEM = "urn:ehr-service:physician-practising-certificate"
INSTITUTION_PROFILE = "urn:ehr-service:StructureDefinition/recognition-institution"
PRACTITIONER_PROFILE = "urn:ehr-service:StructureDefinition/recognition-practitioner"

# The IG's CNHospitalLevelCS: 三级特等 ... 未定级.
GRADES = {
    "1": "三级特等", "2": "三级甲等", "3": "三级乙等", "4": "三级丙等", "5": "二级甲等",
    "6": "二级乙等", "7": "二级丙等", "8": "一级甲等", "9": "一级乙等", "10": "一级丙等",
    "11": "一级未评", "12": "二级未评", "13": "三级未评", "14": "未定级",
}  # fmt: skip

USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"  # 31 characters: no I, O, Z, S, V
USCC_WEIGHTS = tuple(pow(3, i, 31) for i in range(17))  # 1, 3, 9, 27, 19, 26, 16, ...
_USCC = re.compile(f"[{USCC_ALPHABET}]{{2}}[0-9]{{6}}[{USCC_ALPHABET}]{{9}}")
_LICENCE = re.compile(r"[0-9A-Z-]{1,64}")
_INSTITUTION_TYPE = re.compile(r"[A-Z][0-9]{3}")
_DISTRICT = re.compile(r"[0-9]{6}")
_CERTIFICATE = re.compile(r"[0-9]{15}")


def uscc_check_character(first17: str) -> str:
    """The GB 32100-2015 check character of the first 17 characters."""
    total = sum(USCC_ALPHABET.index(c) * w for c, w in zip(first17, USCC_WEIGHTS, strict=True))
    return USCC_ALPHABET[(31 - total % 31) % 31]


def uscc_problem(value: str) -> str | None:
    """Why ``value`` is not a unified social credit code (None: it is one)."""
    if len(value) != 18:
        return "has 18 characters"
    if not _USCC.fullmatch(value[:17]) or value[17] not in USCC_ALPHABET:
        return "uses 0-9 and A-Z without I, O, Z, S, V, with digits in places 3 to 8"
    if uscc_check_character(value[:17]) != value[17]:
        return "ends with the check character of GB 32100-2015"
    return None


def typed(code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": IDENTIFIER_TYPES, "code": code, "display": display}]}


def typed_as(identifier: dict[str, Any], code: str) -> bool:
    kind = identifier.get("type")
    codings = kind.get("coding") if isinstance(kind, dict) else None
    return any(
        isinstance(c, dict) and c.get("system") == IDENTIFIER_TYPES and c.get("code") == code
        for c in codings or ()
    )


def _refuse(message: str, expression: str) -> FhirError:
    return FhirError.of(Category.UNPROCESSABLE, message, code="value", expression=[expression])


def _identifiers(resource: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    return [(i, n) for i, n in enumerate(resource.get("identifier") or ()) if isinstance(n, dict)]


def _coding_extension(
    resource: dict[str, Any], url: str
) -> tuple[int, dict[str, Any] | None] | None:
    for index, extension in enumerate(resource.get("extension") or ()):
        if isinstance(extension, dict) and extension.get("url") == url:
            coding = extension.get("valueCoding")
            return index, coding if isinstance(coding, dict) else None
    return None


def check_organization(organization: dict[str, Any]) -> None:
    """422 for the first bad master-data element of an Organization."""
    for index, identifier in _identifiers(organization):
        value = identifier.get("value")
        at = f"Organization.identifier[{index}].value"
        if typed_as(identifier, "USCC"):
            problem = uscc_problem(value) if isinstance(value, str) else "is a string"
            if problem is not None:
                raise _refuse(f"A unified social credit code {problem}", at)
        if typed_as(identifier, "MIPLRN") and not (
            isinstance(value, str) and _LICENCE.fullmatch(value)
        ):
            raise _refuse(
                "A practising-licence registration number has digits, capital letters and '-'",
                at,
            )
    rules = (
        (INSTITUTION_TYPE_URL, INSTITUTION_TYPES, _INSTITUTION_TYPE.fullmatch,
         "a WS 218-2002 institution type code (e.g. A100)"),
        (HOSPITAL_GRADE_URL, HOSPITAL_GRADES, GRADES.__contains__,
         "a hospital grade code (1-14)"),
        (DISTRICT_URL, DISTRICTS, _DISTRICT.fullmatch,
         "a 6-digit county-level division code"),
    )  # fmt: skip
    for url, system, valid, what in rules:
        found = _coding_extension(organization, url)
        if found is None:
            continue
        index, coding = found
        code = coding.get("code") if coding else None
        if coding is None or coding.get("system") != system or not isinstance(code, str):
            raise _refuse(
                f"{url} takes a valueCoding of {system}", f"Organization.extension[{index}]"
            )
        if not valid(code):
            raise _refuse(
                f"The code must be {what}", f"Organization.extension[{index}].valueCoding.code"
            )


def check_practitioner(practitioner: dict[str, Any]) -> None:
    for index, identifier in _identifiers(practitioner):
        if identifier.get("system") != PRACTISING_CERTIFICATE_SYSTEM:
            continue
        value = identifier.get("value")
        if not (isinstance(value, str) and _CERTIFICATE.fullmatch(value)):
            raise _refuse(
                "A physician's practising-certificate number has 15 digits",
                f"Practitioner.identifier[{index}].value",
            )


def complete(organization: dict[str, Any], extensions: dict[str, Any]) -> bool:
    """Does it hold what the recognition-institution profile requires (a licence
    number, a type and a district; ``extensions``: those about to be set)?"""
    urls = {e.get("url") for e in organization.get("extension") or () if isinstance(e, dict)}
    urls |= set(extensions)
    licensed = any(typed_as(i, "MIPLRN") for _, i in _identifiers(organization))
    return (
        licensed and {INSTITUTION_TYPE_URL, DISTRICT_URL} <= urls and bool(organization.get("name"))
    )


def summary(organization: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) of the master data an Organization holds, for operators."""
    out = []
    for _, identifier in _identifiers(organization):
        for code, label in (("USCC", "unified social credit code"),
                            ("MIPLRN", "practising licence")):  # fmt: skip
            if typed_as(identifier, code):
                out.append((label, str(identifier.get("value"))))
    for url, label in ((INSTITUTION_TYPE_URL, "type (WS 218)"), (HOSPITAL_GRADE_URL, "grade"),
                       (DISTRICT_URL, "district")):  # fmt: skip
        found = _coding_extension(organization, url)
        value = found[1].get("code") if found and found[1] else None
        if isinstance(value, str):
            shown = (
                f"{value} {GRADES[value]}"
                if url == HOSPITAL_GRADE_URL and value in GRADES
                else value
            )
            out.append((label, shown))
    return out
