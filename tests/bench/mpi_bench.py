"""Resident identity at scale: identifier search and ``$match`` with 10^5 and 10^6 residents.

Synthetic residents of Chongqing and Chengdu (valid, unique ID numbers; Chinese
names drawn from common surnames; birth dates over 87 years; mobile numbers;
districts) are written straight through the storage layer with their blind
tokens, seals and index rows (validation skipped: the data is known valid). The
queries run in-process (search compiler or $match scoring + SQL + bundle), for
random residents:

- identifier: ``Patient?identifier=urn:oid:2.16.156.10011.1.3|<number>``
- $match id: the resident's demographics with the ID number (certain path)
- $match demographics: name, birth date, gender and phone, no ID number; also
  reports how often the resident is ranked first (found@1).
"""

from __future__ import annotations

import random
import time
from datetime import date, timedelta
from typing import Any

import orjson

from ehr_service.fhir.primitives import utc_now
from ehr_service.fhir.search.values import index_rows
from ehr_service.interactions import match, search
from ehr_service.interactions.context import RequestContext, Services
from ehr_service.mpi.idnumber import ID_NUMBER_SYSTEM, check_character
from ehr_service.pipeline import with_server_meta
from ehr_service.security.caller import SERVICE
from ehr_service.storage import resources
from ehr_service.storage.bulk import bulk_insert
from ehr_service.storage.resources import NewVersion
from ehr_service.storage.tables import resident_id_number

AREAS = [
    ("500103", "重庆市", "渝中区"),
    ("500105", "重庆市", "江北区"),
    ("500106", "重庆市", "沙坪坝区"),
    ("500107", "重庆市", "九龙坡区"),
    ("500108", "重庆市", "南岸区"),
    ("500112", "重庆市", "渝北区"),
    ("500113", "重庆市", "巴南区"),
    ("500101", "重庆市", "万州区"),
    ("500102", "重庆市", "涪陵区"),
    ("500109", "重庆市", "北碚区"),
    ("510104", "成都市", "锦江区"),
    ("510105", "成都市", "青羊区"),
    ("510106", "成都市", "金牛区"),
    ("510107", "成都市", "武侯区"),
    ("510108", "成都市", "成华区"),
    ("510112", "成都市", "龙泉驿区"),
    ("510114", "成都市", "新都区"),
    ("510115", "成都市", "温江区"),
    ("510116", "成都市", "双流区"),
    ("510113", "成都市", "青白江区"),
]
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘蒋蔡余杜叶程"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍鑫宇浩然欣怡子轩梓涵雨婷佳琪俊杰"
DAYS = 32_000  # birth dates from 1930 over ~87 years
EPOCH = date(1930, 1, 1)


def resident(n: int) -> dict[str, Any]:
    """Resident ``n``: (area, birth day, sequence) is a bijection of n, so numbers are unique."""
    rng = random.Random(n)
    code, city, district = AREAS[n % len(AREAS)]
    m = n // len(AREAS)
    born = EPOCH + timedelta(days=m % DAYS)
    male = rng.random() < 0.5
    sequence = f"{2 * (m // DAYS) + (1 if male else 0):03d}"
    first17 = f"{code}{born:%Y%m%d}{sequence}"
    surname = SURNAMES[min(int(rng.expovariate(0.12)), len(SURNAMES) - 1)]
    given = "".join(rng.choice(GIVEN) for _ in range(rng.choice((1, 2, 2))))
    return {
        "resourceType": "Patient",
        "id": f"r{n}",
        "identifier": [{"system": ID_NUMBER_SYSTEM, "value": first17 + check_character(first17)}],
        "name": [{"text": surname + given, "family": surname, "given": [given]}],
        "gender": "male" if male else "female",
        "birthDate": born.isoformat(),
        "telecom": [{"system": "phone", "value": f"1{rng.choice('3589')}{n % 10**9:09d}"}],
        "address": [{"city": city, "district": district}],
    }


def load(services: Services, first: int, count: int) -> None:
    protection = services.identity.protection
    now = utc_now()
    batch: list[NewVersion] = []
    numbers: list[tuple[str, str]] = []

    def flush() -> None:
        with services.unit.write() as conn:
            resources.insert_new(conn, batch)
            bulk_insert(conn, resident_id_number, ("blind_index", "patient_id"), numbers)
        batch.clear()
        numbers.clear()

    for n in range(first, first + count):
        stored = with_server_meta(resident(n), f"r{n}", 1, now)
        prepared = protection.prepare(stored, None)
        prepared.index_form()
        index = index_rows(services.registry, stored)
        prepared.stored_form(protection.seal)
        batch.append(
            NewVersion("Patient", f"r{n}", 1, now, "POST", f"r{n}", orjson.dumps(stored), index)
        )
        assert prepared.unique_key is not None
        numbers.append((prepared.unique_key, f"r{n}"))
        if len(batch) >= 10_000:
            flush()
    if batch:
        flush()
    with services.unit.write() as conn:
        conn.exec_driver_sql("ANALYZE")


def _percentiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return ordered[len(ordered) // 2], ordered[int(len(ordered) * 0.95)]


def _match_body(n: int, *, with_number: bool) -> dict[str, Any]:
    query = resident(n)
    query.pop("id")
    query.pop("address")
    if not with_number:
        query.pop("identifier")
    return {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": query}]}


def measure(services: Services, residents: int, samples: int = 200) -> dict[str, Any]:
    rng = random.Random(13)
    out: dict[str, Any] = {}
    for name in ("identifier", "$match id", "$match demographics"):
        timings: list[float] = []
        first_hits = 0
        for _ in range(samples):
            n = rng.randrange(residents)
            ctx = RequestContext(services, "http://bench/fhir", caller=SERVICE)
            started = time.perf_counter()
            with services.unit.read() as conn:
                if name == "identifier":
                    number = resident(n)["identifier"][0]["value"]
                    query = {"identifier": [f"{ID_NUMBER_SYSTEM}|{number}"]}
                    ctx = RequestContext(services, "http://bench/fhir", caller=SERVICE, query=query)
                    result = search.search(conn, ctx, "Patient")
                else:
                    body = _match_body(n, with_number=name == "$match id")
                    result = match.match(conn, ctx, body)
                encoded = orjson.dumps(result.body)
            timings.append((time.perf_counter() - started) * 1000)
            entries = orjson.loads(encoded).get("entry") or []
            first_hits += bool(entries) and entries[0]["resource"]["id"] == f"r{n}"
        p50, p95 = _percentiles(timings)
        out[name] = {
            "p50_ms": round(p50, 3),
            "p95_ms": round(p95, 3),
            "found_at_1": round(first_hits / samples, 3),
        }
    return out
