"""Demo data for ``make serve``: a few residents of Chongqing and Chengdu with
laboratory and imaging results, loaded into an empty database on first start.

Names, numbers and results are invented. The resident ID numbers are made up
(valid in form, with their check characters) and, like any, are stored sealed.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from ehr_service.interactions.bundle import process_bundle
from ehr_service.interactions.context import RequestContext, ReturnPreference, Services
from ehr_service.mpi.idnumber import ID_NUMBER_SYSTEM, check_character
from ehr_service.security.caller import SERVICE
from ehr_service.storage import resources

logger = logging.getLogger("ehr_service.demo")

LOINC = "http://loinc.org"
MRN_SYSTEM = "urn:ehr-service:demo:hospital-mrn"

_HOSPITALS = [
    ("hosp-cq", "重庆医科大学附属第一医院", "Chongqing", "渝中区"),
    ("hosp-cd", "四川大学华西医院", "Chengdu", "武侯区"),
]
# (key, family, given, gender, birthDate, hospital key, district code, sequence)
_RESIDENTS = [
    ("p1", "王", "芳", "female", "1968-03-14", "hosp-cq", "500103", "024"),
    ("p2", "李", "建国", "male", "1955-11-02", "hosp-cq", "500106", "013"),
    ("p3", "张", "小雨", "female", "1992-07-21", "hosp-cd", "510107", "046"),
]


def demo_id_number(district: str, birth: str, sequence: str) -> str:
    first17 = district + birth.replace("-", "") + sequence
    return first17 + check_character(first17)


# (LOINC code, display, value, unit, UCUM unit)
_LABS = [
    ("2345-7", "Glucose [Mass/volume] in Serum or Plasma", 5.8, "mmol/L", "mmol/L"),
    ("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", 6.1, "%", "%"),
    ("2823-3", "Potassium [Moles/volume] in Serum or Plasma", 4.2, "mmol/L", "mmol/L"),
]


def _entry(key: str, resource: dict[str, Any]) -> dict[str, Any]:
    return {
        "fullUrl": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, 'ehr-service-demo:' + key)}",
        "resource": resource,
        "request": {"method": "POST", "url": resource["resourceType"]},
    }


def demo_bundle() -> dict[str, Any]:
    """A transaction bundle of hospitals, residents, encounters and results."""
    urls: dict[str, str] = {}
    entries: list[dict[str, Any]] = []

    def add(key: str, resource: dict[str, Any]) -> str:
        entry = _entry(key, resource)
        urls[key] = entry["fullUrl"]
        entries.append(entry)
        return str(entry["fullUrl"])

    for key, name, city, district in _HOSPITALS:
        add(
            key,
            {
                "resourceType": "Organization",
                "identifier": [{"system": "urn:ehr-service:demo:org", "value": key}],
                "active": True,
                "name": name,
                "address": [{"city": city, "district": district, "country": "CN"}],
            },
        )
    for key, family, given, gender, birth, hospital, district, sequence in _RESIDENTS:
        patient = add(
            key,
            {
                "resourceType": "Patient",
                "identifier": [
                    {
                        "system": ID_NUMBER_SYSTEM,
                        "value": demo_id_number(district, birth, sequence),
                    },
                    {"system": MRN_SYSTEM, "value": f"MRN-{key.upper()}"},
                ],
                "name": [{"text": family + given, "family": family, "given": [given]}],
                "gender": gender,
                "birthDate": birth,
                "managingOrganization": {"reference": urls[hospital]},
            },
        )
        encounter = add(
            f"{key}-enc",
            {
                "resourceType": "Encounter",
                "status": "finished",
                "class": {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                    "code": "AMB",
                    "display": "ambulatory",
                },
                "subject": {"reference": patient},
                "serviceProvider": {"reference": urls[hospital]},
                "period": {
                    "start": "2026-11-02T09:00:00+08:00",
                    "end": "2026-11-02T10:00:00+08:00",
                },
            },
        )
        results = []
        for code, display, value, unit, ucum in _LABS:
            results.append(
                {
                    "reference": add(
                        f"{key}-{code}",
                        {
                            "resourceType": "Observation",
                            "status": "final",
                            "category": [
                                {
                                    "coding": [
                                        {
                                            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                            "code": "laboratory",
                                        }
                                    ]
                                }
                            ],
                            "code": {
                                "coding": [{"system": LOINC, "code": code, "display": display}]
                            },
                            "subject": {"reference": patient},
                            "encounter": {"reference": encounter},
                            "effectiveDateTime": "2026-11-02T09:30:00+08:00",
                            "performer": [{"reference": urls[hospital]}],
                            "valueQuantity": {
                                "value": value,
                                "unit": unit,
                                "system": "http://unitsofmeasure.org",
                                "code": ucum,
                            },
                        },
                    )
                }
            )
        add(
            f"{key}-report",
            {
                "resourceType": "DiagnosticReport",
                "status": "final",
                "code": {
                    "coding": [
                        {
                            "system": LOINC,
                            "code": "24323-8",
                            "display": "Comprehensive metabolic 2000 panel",
                        }
                    ]
                },
                "subject": {"reference": patient},
                "encounter": {"reference": encounter},
                "effectiveDateTime": "2026-11-02T09:30:00+08:00",
                "performer": [{"reference": urls[hospital]}],
                "result": results,
            },
        )
        add(
            f"{key}-ct",
            {
                "resourceType": "ImagingStudy",
                "status": "available",
                "subject": {"reference": patient},
                "encounter": {"reference": encounter},
                "started": "2026-11-02T09:45:00+08:00",
                "modality": [
                    {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "CT"}
                ],
                "description": "CT chest without contrast",
                "numberOfSeries": 1,
                "numberOfInstances": 120,
            },
        )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def load_demo_data(services: Services) -> int:
    """Load the demo bundle if the database holds no resident yet (the service's own
    terminology is there from the first start); return how many."""
    with services.unit.read() as conn:
        if resources.count_resources(conn, "Patient") > 0:
            return 0
    settings = services.settings
    base_url = settings.base_url or f"http://{settings.host}:{settings.port}/fhir"
    ctx = RequestContext(
        services, base_url, "demo", prefer_return=ReturnPreference.MINIMAL, caller=SERVICE
    )
    bundle = demo_bundle()
    process_bundle(ctx, bundle)
    logger.info("loaded %d demo resources", len(bundle["entry"]))
    return len(bundle["entry"])
