"""The recognition rules over a table of cases: every reason code, the window's
edges at day N and N+1, quality control lapsing mid-window, partner-region
results, and an edition switch changing the answer without code changes."""

from __future__ import annotations

from datetime import date, timedelta

import orjson
import pytest

from ehr_service.config import PROJECT_ROOT
from ehr_service.recognition.catalogue import Catalogue, parse_edition
from ehr_service.recognition.institutions import Institution, QualityControl
from ehr_service.recognition.rules import Candidate, assess, parse_day, result_date

SHIPPED = PROJECT_ROOT / "fhir_profiles" / "recognition" / "catalogue-2024.json"


def _catalogue(document: object) -> Catalogue:
    row, items, codes, _ = parse_edition(document)
    return Catalogue.of(row, items, codes)


CATALOGUE = _catalogue(orjson.loads(SHIPPED.read_bytes()))
GLU = CATALOGUE.items["LAB-GLU"]  # 30 days, lab-chemistry
K = CATALOGUE.items["LAB-K"]  # 7 days
CT_CHEST = CATALOGUE.items["IMG-CT-CHEST"]  # 90 days, imaging-CT
DAY = date(2026, 3, 1)
QC_2026 = QualityControl(
    "lab-chemistry", "NCCL EQA", "2026-1", True, date(2026, 1, 1), date(2026, 6, 30)
)
QC_CT = QualityControl(
    "imaging-CT", "provincial", "2026", True, date(2026, 1, 1), date(2026, 12, 31)
)
HOSPITAL = Institution(
    "Organization/h1", "重庆医科大学附属第一医院", "chongqing", "3A", (QC_2026, QC_CT)
)
QC_FAILED = QualityControl(
    "lab-chemistry", "NCCL EQA", "2026-1", False, date(2026, 1, 1), date(2026, 6, 30)
)
FAILED = Institution("Organization/h2", "某医院", "chongqing", "2A", (QC_FAILED,))
SICHUAN = Institution("Organization/sc", "四川大学华西医院", "sichuan", "3A", (QC_2026,))


def candidate(**changes: object) -> Candidate:
    fields: dict[str, object] = {
        "reference": "Observation/o1", "resource_type": "Observation", "item": GLU,
        "institution": HOSPITAL, "region": "chongqing", "day": DAY, "final": True,
    }  # fmt: skip
    fields.update(changes)
    return Candidate(**fields)  # type: ignore[arg-type]


CASES = [
    # (name, candidate changes, as-of offset in days, superseded, expected reasons)
    ("recognisable", {}, 0, False, ()),
    ("window day N (30) still recognisable", {}, 30, False, ()),
    ("window day N+1 expired", {}, 31, False, ("expired",)),
    ("7-day item on day 7", {"item": K}, 7, False, ()),
    ("7-day item on day 8", {"item": K}, 8, False, ("expired",)),
    ("imaging on day 90", {"item": CT_CHEST, "resource_type": "ImagingStudy"}, 90, False, ()),
    ("imaging on day 91", {"item": CT_CHEST, "resource_type": "ImagingStudy"}, 91, False,
     ("expired",)),
    ("not in catalogue", {"item": None}, 0, False, ("not-in-catalogue",)),
    ("not final", {"final": False}, 0, False, ("not-final",)),
    ("institution failed QC", {"institution": FAILED}, 0, False,
     ("institution-not-quality-controlled",)),
    ("institution unknown", {"institution": None}, 0, False,
     ("institution-not-quality-controlled",)),
    ("QC of another category only", {"item": CT_CHEST, "institution": SICHUAN}, 0, False,
     ("institution-not-quality-controlled",)),
    ("result after QC lapsed", {"day": date(2026, 7, 2)}, 0, False,
     ("institution-not-quality-controlled",)),
    ("QC lapses mid-window: result made while QC held", {"day": date(2026, 6, 20)}, 20, False, ()),
    ("consent refused", {"consent_refused": True}, 0, False, ("consent-refused",)),
    ("superseded", {}, 0, True, ("superseded",)),
    ("partner-region result, QC'd", {"institution": SICHUAN, "region": "sichuan"}, 5, False, ()),
    ("partner-region result, expired and refused",
     {"institution": SICHUAN, "region": "sichuan", "consent_refused": True}, 40, False,
     ("expired", "consent-refused")),
    ("no date", {"day": None}, 0, False, ("expired",)),
]  # fmt: skip


@pytest.mark.parametrize(("name", "changes", "offset", "superseded", "reasons"), CASES)
def test_rules(
    name: str, changes: dict[str, object], offset: int, superseded: bool, reasons: tuple[str, ...]
) -> None:
    subject = candidate(**changes)
    as_of = (subject.day or DAY) + timedelta(days=offset)
    verdict = assess(subject, as_of, superseded=superseded)
    assert verdict.reasons == reasons, name
    assert verdict.recognizable is (not reasons)
    if subject.item is not None and subject.day is not None:
        assert verdict.expires_on == subject.day + timedelta(days=subject.item.validity_days + 1)


def test_every_reason_code_is_covered_by_the_table() -> None:
    from ehr_service.recognition.rules import REASONS

    covered = {r for case in CASES for r in case[4]}
    assert covered == set(REASONS)


def test_edition_switch_changes_items_and_windows_without_code() -> None:
    document = orjson.loads(SHIPPED.read_bytes())
    codesystem = document["entry"][0]["resource"]
    codesystem["version"] = "2025"
    for concept in codesystem["concept"]:
        if concept["code"] == "LAB-GLU":
            for prop in concept["property"]:
                if prop["code"] == "validityDays":
                    prop["valueInteger"] = 14
    codesystem["concept"] = [c for c in codesystem["concept"] if c["code"] != "LAB-K"]
    codesystem["concept"].append(
        {"code": "LAB-PCT", "display": "Procalcitonin",
         "designation": [{"language": "zh-CN", "value": "降钙素原"}],
         "property": [{"code": "category", "valueCode": "laboratory"},
                      {"code": "loinc", "valueCode": "33959-8"},
                      {"code": "validityDays", "valueInteger": 3},
                      {"code": "qcCategory", "valueCode": "lab-immunology"},
                      {"code": "price", "valueDecimal": 80}]})  # fmt: skip
    edition = _catalogue(document)
    assert edition.edition == "2025" and len(edition.items) == 112
    glucose = edition.item_of_coding("http://loinc.org", "2345-7")
    assert glucose is not None and glucose.validity_days == 14
    assert edition.item_of_coding("http://loinc.org", "2823-3") is None  # potassium dropped
    assert edition.item_of_coding("http://loinc.org", "33959-8") is not None  # by LOINC property
    day_20 = assess(candidate(item=glucose), DAY + timedelta(days=20))
    assert day_20.reasons == ("expired",)  # 30 days in 2024, 14 in 2025


def test_catalogue_2024_has_45_laboratory_and_67_imaging_items() -> None:
    categories = [i.category for i in CATALOGUE.items.values()]
    assert categories.count("laboratory") == 45 and categories.count("imaging") == 67
    assert {i.validity_days for i in CATALOGUE.items.values()} >= {7, 30, 60, 90}
    assert CATALOGUE.item_of_coding("urn:ehr-service:local:lab", "CQ-GLU") == GLU
    assert CATALOGUE.item_for("ImagingStudy", {
        "series": [{"modality": {"code": "CT"}, "bodySite": {"code": "51185008"}}]
    }) == CT_CHEST  # fmt: skip


@pytest.mark.parametrize(
    ("value", "day"),
    [
        ("2026-03-01", date(2026, 3, 1)),
        ("2026-03-01T23:30:00+08:00", date(2026, 3, 1)),
        ("2026-03-01T16:30:00Z", date(2026, 3, 2)),  # 00:30 in Chongqing
        ("2026-03", None),
        ("garbage", None),
    ],
)
def test_days_are_china_standard_time(value: str, day: date | None) -> None:
    assert parse_day(value) == day
    assert result_date("Observation", {"effectiveDateTime": value}) == day


def test_broken_catalogues_are_refused() -> None:
    from ehr_service.recognition.catalogue import CatalogueError

    for broken in (
        {"resourceType": "Bundle", "entry": []},
        {"resourceType": "CodeSystem", "url": "u", "concept": [{"code": "x"}]},
        {"resourceType": "CodeSystem", "url": "u", "version": "1",
         "concept": [{"code": "x", "property": [{"code": "category", "valueCode": "lab"}]}]},
    ):  # fmt: skip
        with pytest.raises(CatalogueError):
            parse_edition(broken)


def test_extreme_dates_do_not_overflow() -> None:
    assert parse_day("9999-12-31T23:59:59Z") == date(9999, 12, 31)
    assert parse_day("0001-01-01T00:00:00+14:00") == date(1, 1, 1)


def test_editions_must_be_of_the_catalogue_code_system() -> None:
    from ehr_service.recognition.catalogue import CatalogueError

    document = orjson.loads(SHIPPED.read_bytes())
    codesystem = document["entry"][0]["resource"]
    codesystem["url"] = "urn:ehr-service:recognition-item:2028"
    with pytest.raises(CatalogueError, match="url"):
        parse_edition(document)
    codesystem["url"] = "urn:ehr-service:recognition-item"
    codesystem["concept"][0]["property"][2]["valueInteger"] = 3_000_000  # validityDays
    with pytest.raises(CatalogueError, match="validityDays"):
        parse_edition(document)
