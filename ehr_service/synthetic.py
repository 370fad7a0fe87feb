"""Deterministic, realistic lifelong records of residents of Chongqing and
Sichuan/Chengdu, for tests, benchmarks and demonstrations (``ehr-service generate``).

Each resident has a valid resident ID number (address code of their district,
birth date, sequence, sex digit, GB 11643 check character), a Chinese name, an
address, a birth and (for some) a death, and over the decades encounters at the
region's hospitals with laboratory results of catalogue items and imaging
(a report and a study). The same seed gives the same data, byte for byte.

Written as NDJSON (one file per type, resources with ids) and as one transaction
Bundle per resident (PUT with the same ids, so loading either twice changes
nothing new).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, BinaryIO

from ehr_service.fhir import jsonio
from ehr_service.mpi.idnumber import ID_NUMBER_SYSTEM, check_character
from ehr_service.recognition.institutions import (
    LEVEL_URL,
    REGION_URL,
    quality_control_extension,
)

CST = timezone(timedelta(hours=8))
DISTRICTS = [
    ("500103", "重庆市", "渝中区", "chongqing"), ("500105", "重庆市", "江北区", "chongqing"),
    ("500106", "重庆市", "沙坪坝区", "chongqing"), ("500107", "重庆市", "九龙坡区", "chongqing"),
    ("500108", "重庆市", "南岸区", "chongqing"), ("500112", "重庆市", "渝北区", "chongqing"),
    ("510104", "成都市", "锦江区", "sichuan"), ("510105", "成都市", "青羊区", "sichuan"),
    ("510106", "成都市", "金牛区", "sichuan"), ("510107", "成都市", "武侯区", "sichuan"),
    ("510108", "成都市", "成华区", "sichuan"), ("510112", "成都市", "龙泉驿区", "sichuan"),
]  # fmt: skip
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘蒋蔡余杜叶程"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华建文红玉兰成林海燕鹏飞宇欣怡浩然梓涵"
HOSPITALS = [
    ("cq-h1", "重庆医科大学附属第一医院", "chongqing", "3A"),
    ("cq-h2", "重庆市人民医院", "chongqing", "3A"),
    ("cq-h3", "重庆市沙坪坝区人民医院", "chongqing", "2A"),
    ("sc-h1", "四川大学华西医院", "sichuan", "3A"),
    ("sc-h2", "四川省人民医院", "sichuan", "3A"),
    ("sc-h3", "成都市第五人民医院", "sichuan", "2A"),
]
LAB = [  # LOINC, unit, low, high
    ("2345-7", "mmol/L", 3.9, 9.5), ("4548-4", "%", 4.2, 8.5), ("2160-0", "umol/L", 45, 130),
    ("2823-3", "mmol/L", 3.3, 5.4), ("2951-2", "mmol/L", 134, 146), ("1742-6", "U/L", 7, 80),
    ("718-7", "g/L", 105, 170), ("6690-2", "10*9/L", 3.5, 11), ("2093-3", "mmol/L", 3.1, 6.8),
    ("2571-8", "mmol/L", 0.5, 3.2), ("3016-3", "mIU/L", 0.3, 5.5), ("1988-5", "mg/L", 0.2, 20),
]  # fmt: skip
IMAGING = [
    ("CT-CHEST", "CT", "51185008", "胸部CT"), ("DX-CHEST", "DX", "51185008", "胸部X线"),
    ("US-UPPERABD", "US", "27947004", "上腹部超声"), ("MR-BRAIN", "MR", "12738006", "颅脑磁共振"),
    ("US-THYROID", "US", "69748006", "甲状腺超声"),
]  # fmt: skip
LAB_CATEGORY = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                            "code": "laboratory"}]}  # fmt: skip
RAD_SECTION = {
    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD"}]
}
QC_CATEGORIES = ["lab-chemistry", "lab-hematology", "lab-immunology", "lab-coagulation",
                 "imaging-DX", "imaging-CT", "imaging-MR", "imaging-US"]  # fmt: skip


def institutions() -> list[dict[str, Any]]:
    out = []
    for org_id, name, region, level in HOSPITALS:
        out.append({
            "resourceType": "Organization", "id": org_id, "active": True, "name": name,
            "extension": [{"url": REGION_URL, "valueCode": region},
                          {"url": LEVEL_URL, "valueCode": level}]
            + [quality_control_extension(c, "NCCL EQA" if c.startswith("lab") else "质控中心",
                                         "2000-2035", level == "3A" or not c.endswith("MR"),
                                         "2000-01-01", "2035-12-31") for c in QC_CATEGORIES],
        })  # fmt: skip
    return out


def _id_number(rng: random.Random, area: str, born: date, male: bool) -> str:
    sequence = rng.randrange(0, 100) * 10 + rng.choice([1, 3, 5, 7, 9] if male else [0, 2, 4, 6, 8])
    first17 = f"{area}{born:%Y%m%d}{sequence:03d}"
    return first17 + check_character(first17)


def _moment(day: date, rng: random.Random) -> str:
    at = datetime(day.year, day.month, day.day, rng.randrange(7, 18), rng.randrange(60), tzinfo=CST)
    return at.isoformat()


def resident(seed: int, n: int) -> list[dict[str, Any]]:
    """The whole record of resident ``n``: Patient first, then the rest in time order."""
    rng = random.Random(f"{seed}:{n}")  # noqa: S311 - synthetic data, not secrets
    area, city, district, region = rng.choice(DISTRICTS)
    born = date(1930, 1, 1) + timedelta(days=rng.randrange(0, 95 * 365))
    born = min(born, date(2025, 12, 31))
    male = rng.random() < 0.5
    pid = f"g{seed}-p{n}"
    age_years = (date(2026, 11, 1) - born).days // 365
    died = None
    if age_years > 70 and rng.random() < 0.35:
        died = born + timedelta(days=365 * rng.randrange(70, max(71, age_years)))
    family = rng.choice(SURNAMES)
    given = "".join(rng.choice(GIVEN) for _ in range(rng.choice([1, 2])))
    patient: dict[str, Any] = {
        "resourceType": "Patient", "id": pid,
        "identifier": [{"system": ID_NUMBER_SYSTEM, "value": _id_number(rng, area, born, male)}],
        "name": [{"text": family + given, "family": family, "given": [given]}],
        "gender": "male" if male else "female", "birthDate": born.isoformat(),
        "telecom": [{"system": "phone", "value": f"1{rng.choice('3589')}{rng.randrange(10**9):09d}",
                     "use": "mobile"}],
        "address": [{"text": f"{city}{district}", "city": city, "district": district,
                     "country": "CN"}],
    }  # fmt: skip
    if died:
        patient["deceasedDateTime"] = _moment(died, rng)
    record = [patient]
    end = min(died or date(2026, 11, 1), date(2026, 11, 1))
    visits = max(1, min(40, (end - born).days // 365 // 2))
    days = sorted(
        rng.sample(range(max(1, (end - born).days)), k=min(visits, max(1, (end - born).days)))
    )
    for v, offset in enumerate(days):
        day = born + timedelta(days=offset)
        hospital = rng.choice(
            [h for h in HOSPITALS if h[2] == region] if rng.random() < 0.85 else HOSPITALS
        )
        org = f"Organization/{hospital[0]}"
        encounter_id = f"{pid}-e{v}"
        record.append({
            "resourceType": "Encounter", "id": encounter_id, "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                      "code": "AMB", "display": "ambulatory"},
            "subject": {"reference": f"Patient/{pid}"}, "serviceProvider": {"reference": org},
            "period": {"start": _moment(day, rng), "end": _moment(day, rng)},
        })  # fmt: skip
        for r, (loinc, unit, low, high) in enumerate(rng.sample(LAB, k=rng.randrange(1, 4))):
            record.append({
                "resourceType": "Observation", "id": f"{pid}-e{v}-l{r}", "status": "final",
                "category": [LAB_CATEGORY],
                "code": {"coding": [{"system": "http://loinc.org", "code": loinc}]},
                "subject": {"reference": f"Patient/{pid}"},
                "encounter": {"reference": f"Encounter/{encounter_id}"},
                "effectiveDateTime": _moment(day, rng), "performer": [{"reference": org}],
                "valueQuantity": {"value": round(rng.uniform(low, high), 2), "unit": unit},
            })  # fmt: skip
        if rng.random() < 0.25:
            code, modality, site, title = rng.choice(IMAGING)
            study_id = f"{pid}-e{v}-s"
            record.append({
                "resourceType": "ImagingStudy", "id": study_id, "status": "available",
                "subject": {"reference": f"Patient/{pid}"},
                "encounter": {"reference": f"Encounter/{encounter_id}"},
                "started": _moment(day, rng),
                "modality": [{"system": "http://dicom.nema.org/resources/ontology/DCM",
                              "code": modality}],
                "series": [{"uid": f"2.25.{seed}{n}{v}", "modality": {
                    "system": "http://dicom.nema.org/resources/ontology/DCM", "code": modality},
                    "bodySite": {"system": "http://snomed.info/sct", "code": site},
                    "performer": [{"actor": {"reference": org}}]}],
            })  # fmt: skip
            record.append({
                "resourceType": "DiagnosticReport", "id": f"{pid}-e{v}-r", "status": "final",
                "category": [RAD_SECTION],
                "code": {"coding": [{"system": "urn:ehr-service:local:imaging", "code": code}],
                         "text": title},
                "subject": {"reference": f"Patient/{pid}"},
                "effectiveDateTime": _moment(day, rng), "performer": [{"reference": org}],
                "imagingStudy": [{"reference": f"ImagingStudy/{study_id}"}],
                "conclusion": rng.choice(["未见明显异常", "建议随访", "轻度异常，请结合临床"]),
            })  # fmt: skip
    return record


def residents(seed: int, count: int) -> Iterator[list[dict[str, Any]]]:
    for n in range(count):
        yield resident(seed, n)


def transaction(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle", "type": "transaction",
        "entry": [
            {"resource": r,
             "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
            for r in resources
        ],
    }  # fmt: skip


def write(out: Path, seed: int, count: int, *, bundles: bool = True) -> dict[str, int]:
    """NDJSON under ``out/ndjson`` and (``bundles``) transactions under ``out/bundles``;
    returns resources per type. Memory holds one resident at a time."""
    (out / "ndjson").mkdir(parents=True, exist_ok=True)
    if bundles:
        (out / "bundles").mkdir(parents=True, exist_ok=True)
    files: dict[str, BinaryIO] = {}
    counts: dict[str, int] = {}

    def emit(resource: dict[str, Any]) -> None:
        kind = resource["resourceType"]
        if kind not in files:
            files[kind] = (out / "ndjson" / f"{kind}.ndjson").open("wb")
        files[kind].write(jsonio.dumps(resource) + b"\n")
        counts[kind] = counts.get(kind, 0) + 1

    try:
        shared = institutions()
        for org in shared:
            emit(org)
        if bundles:
            (out / "bundles" / "institutions.json").write_bytes(jsonio.dumps(transaction(shared)))
        for n, record in enumerate(residents(seed, count)):
            for resource in record:
                emit(resource)
            if bundles:
                (out / "bundles" / f"resident-{n:07d}.json").write_bytes(
                    jsonio.dumps(transaction(record))
                )
    finally:
        for handle in files.values():
            handle.close()
    return counts
