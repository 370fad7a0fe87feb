"""Search and $everything latency as the database grows (10^4 -> 10^5 -> 10^6).

Synthetic residents with laboratory Observations are written straight through
the storage layer (index rows included, validation skipped: the data is known
valid), then typical queries run in-process (compiler + SQL + bundle
serialisation, no HTTP) for random residents. Reports p50/p95 per size and the
growth ratio of p95 against the smallest size.
"""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from ehr_service.fhir.primitives import utc_now
from ehr_service.fhir.search.values import index_rows
from ehr_service.interactions import everything, search
from ehr_service.interactions.context import RequestContext, Services
from ehr_service.pipeline import with_server_meta
from ehr_service.security.caller import SERVICE
from ehr_service.storage import resources
from ehr_service.storage.resources import NewVersion

CODES = [
    "2345-7",
    "4548-4",
    "2823-3",
    "2951-2",
    "2160-0",
    "1742-6",
    "1920-8",
    "718-7",
    "6690-2",
    "777-3",
]
PER_PATIENT = 20  # one Patient and 19 Observations


def _patient(n: int) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": f"bp{n}",
        "identifier": [{"system": "urn:bench:mrn", "value": f"M{n:08d}"}],
        "name": [{"family": f"Fam{n % 997}", "given": [f"Giv{n % 101}"]}],
        "gender": "female" if n % 2 else "male",
        "birthDate": f"{1930 + n % 90}-{1 + n % 12:02d}-{1 + n % 28:02d}",
    }


def _observation(n: int, k: int, rng: random.Random) -> dict[str, Any]:
    when = datetime(2010, 1, 1, tzinfo=UTC) + timedelta(days=rng.randrange(0, 5800))
    return {
        "resourceType": "Observation",
        "id": f"bo{n}-{k}",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": CODES[k % len(CODES)]}]},
        "subject": {"reference": f"Patient/bp{n}"},
        "effectiveDateTime": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "valueQuantity": {
            "value": round(rng.uniform(1, 10), 2),
            "unit": "mmol/L",
            "system": "http://unitsofmeasure.org",
            "code": "mmol/L",
        },
    }


def load(services: Services, first_patient: int, patients: int, seed: int = 7) -> None:
    rng = random.Random(seed + first_patient)
    batch: list[NewVersion] = []
    now = utc_now()
    for n in range(first_patient, first_patient + patients):
        items = [_patient(n)] + [_observation(n, k, rng) for k in range(PER_PATIENT - 1)]
        for item in items:
            stored = with_server_meta(item, item["id"], 1, now)
            batch.append(
                NewVersion(
                    item["resourceType"],
                    item["id"],
                    1,
                    now,
                    "POST",
                    f"bp{n}",
                    orjson.dumps(stored),
                    index_rows(services.registry, stored),
                )
            )
        if len(batch) >= 10_000:
            with services.unit.write() as conn:
                resources.insert_new(conn, batch)
            batch = []
    if batch:
        with services.unit.write() as conn:
            resources.insert_new(conn, batch)
    with services.unit.write() as conn:
        conn.exec_driver_sql("ANALYZE")


def _percentiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return ordered[len(ordered) // 2], ordered[int(len(ordered) * 0.95)]


def measure(services: Services, patients: int, samples: int = 200) -> dict[str, Any]:
    rng = random.Random(11)
    queries = {
        "patient+code+date": lambda n: (
            "Observation",
            {
                "patient": [f"Patient/bp{n}"],
                "code": [f"http://loinc.org|{CODES[n % 10]}"],
                "date": ["ge2015-01-01"],
            },
        ),
        "identifier": lambda n: ("Patient", {"identifier": [f"urn:bench:mrn|M{n:08d}"]}),
        "$everything": lambda n: ("$everything", {"_count": ["50"]}),
    }
    out: dict[str, Any] = {}
    for name, make in queries.items():
        timings = []
        for _ in range(samples):
            n = rng.randrange(patients)
            resource_type, query = make(n)
            ctx = RequestContext(services, "http://bench/fhir", caller=SERVICE, query=query)
            started = time.perf_counter()
            with services.unit.read() as conn:
                if resource_type == "$everything":
                    result = everything.everything(conn, ctx, f"bp{n}")
                else:
                    result = search.search(conn, ctx, resource_type)
                orjson.dumps(result.body)
            timings.append((time.perf_counter() - started) * 1000)
        p50, p95 = _percentiles(timings)
        out[name] = {"p50_ms": round(p50, 3), "p95_ms": round(p95, 3)}
    return out
