"""``$recognizable-results`` latency as stored results grow (10^4 .. 10^6).

Residents each have a lifelong run of 50 laboratory and imaging results over ten
years from 20 institutions (most quality-controlled), written straight through
the storage layer (validated shape, no search index rows: the operation reads a
record through the compartment index). The operation then runs in-process (no
HTTP) for random residents asking for three items, asOf today, including the
write of its "offered" statistics.
"""

from __future__ import annotations

import random
import time
from datetime import timedelta
from typing import Any

import orjson

from ehr_service.fhir.primitives import utc_now
from ehr_service.interactions import recognition
from ehr_service.interactions.context import RequestContext, Services
from ehr_service.pipeline import with_server_meta
from ehr_service.recognition.institutions import REGION_URL, quality_control_extension
from ehr_service.security.caller import SERVICE
from ehr_service.storage import resources
from ehr_service.storage.resources import NewVersion

PER_PATIENT = 50
INSTITUTIONS = 20
LAB_LOINC = ["2345-7", "4548-4", "2160-0", "2823-3", "1742-6", "718-7", "2093-3", "3016-3"]
IMAGING = [("CT", "51185008"), ("DX", "51185008"), ("US", "69748006"), ("MR", "12738006")]
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"


def _institutions(services: Services) -> None:
    now = utc_now()
    batch = []
    for n in range(INSTITUTIONS):
        categories = ["lab-chemistry", "lab-hematology", "lab-immunology", "imaging-CT",
                      "imaging-DX", "imaging-US", "imaging-MR"]  # fmt: skip
        org = {
            "resourceType": "Organization", "name": f"医院 {n}",
            "extension": [{"url": REGION_URL, "valueCode": "chongqing" if n % 2 else "sichuan"}]
            + [quality_control_extension(c, "EQA", "2016-2036", n % 7 != 0, "2016-01-01",
                                         "2036-12-31") for c in categories],
        }  # fmt: skip
        stored = with_server_meta(org, f"org{n}", 1, now)
        batch.append(
            NewVersion("Organization", f"org{n}", 1, now, "POST", None, orjson.dumps(stored))
        )
    with services.unit.write() as conn:
        resources.insert_new(conn, batch)


def _results(rng: random.Random, patient: str) -> list[tuple[str, dict[str, Any]]]:
    today = utc_now()
    out = []
    for n in range(PER_PATIENT):
        day = (today - timedelta(days=rng.randint(0, 3650))).date().isoformat()
        org = f"Organization/org{rng.randrange(INSTITUTIONS)}"
        if n % 5:
            out.append(("Observation", {
                "resourceType": "Observation", "status": "final",
                "category": [{"coding": [{"system": CATEGORY, "code": "laboratory"}]}],
                "code": {"coding": [{"system": "http://loinc.org", "code": rng.choice(LAB_LOINC)}]},
                "subject": {"reference": f"Patient/{patient}"}, "performer": [{"reference": org}],
                "effectiveDateTime": day,
                "valueQuantity": {"value": round(rng.uniform(1, 9), 2), "unit": "mmol/L"},
            }))  # fmt: skip
        else:
            modality, site = rng.choice(IMAGING)
            out.append(("ImagingStudy", {
                "resourceType": "ImagingStudy", "status": "available",
                "subject": {"reference": f"Patient/{patient}"}, "started": day,
                "modality": [{"system": "http://dicom.nema.org/resources/ontology/DCM",
                              "code": modality}],
                "series": [{"uid": f"1.2.{n}", "modality": {"code": modality},
                            "bodySite": {"code": site},
                            "performer": [{"actor": {"reference": org}}]}],
            }))  # fmt: skip
    return out


def load(services: Services, first: int, count: int) -> None:
    """``count`` residents from number ``first`` on, each with their results."""
    if first == 0:
        _institutions(services)
        services.catalogues.ensure_loaded()  # type: ignore[union-attr]
    now = utc_now()
    batch: list[NewVersion] = []
    rng = random.Random(first)

    def flush() -> None:
        with services.unit.write() as conn:
            resources.insert_new(conn, batch)
        batch.clear()

    for n in range(first, first + count):
        pid = f"rr{n}"
        patient = with_server_meta({"resourceType": "Patient", "gender": "female"}, pid, 1, now)
        batch.append(NewVersion("Patient", pid, 1, now, "POST", pid, orjson.dumps(patient)))
        for index, (resource_type, resource) in enumerate(_results(rng, pid)):
            rid = f"{pid}-{index}"
            stored = with_server_meta(resource, rid, 1, now)
            batch.append(NewVersion(resource_type, rid, 1, now, "POST", pid, orjson.dumps(stored)))
        if len(batch) >= 20_000:
            flush()
    if batch:
        flush()
    with services.unit.write() as conn:
        conn.exec_driver_sql("ANALYZE")


def measure(services: Services, residents: int, samples: int = 200) -> dict[str, Any]:
    rng = random.Random(residents)
    ctx = RequestContext(services, "http://bench/fhir", "bench", caller=SERVICE)
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "item", "valueCode": "LAB-GLU"}, {"name": "item", "valueCode": "LAB-HBA1C"},
        {"name": "item", "valueCode": "IMG-CT-CHEST"}]}  # fmt: skip
    timings = []
    offered = 0
    for _ in range(samples):
        pid = f"rr{rng.randrange(residents)}"
        started = time.perf_counter()
        with services.unit.write() as conn:
            result = recognition.recognizable_results(conn, ctx, pid, body)
        timings.append((time.perf_counter() - started) * 1000)
        assert isinstance(result.body, dict)
        offered += sum(
            1 for p in result.body["parameter"] if p["name"] == "result"
            for part in p["part"] if part["name"] == "recognizable" and part["valueBoolean"]
        )  # fmt: skip
    timings.sort()
    return {
        "$recognizable-results": {
            "p50_ms": round(timings[len(timings) // 2], 2),
            "p95_ms": round(timings[int(len(timings) * 0.95)], 2),
            "recognizable_per_call": round(offered / samples, 2),
        }
    }
