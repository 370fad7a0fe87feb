"""Signed-bundle ingest: messages of a partner region (each one resident with a
lifelong run of laboratory results) are verified and ingested in-process through
the same code as ``POST /exchange/v1/bundles`` (no HTTP), and the signature check
alone is timed over the same messages, so the share of ingest time spent on
verification is a ratio measured in one run.

Half the residents already have a record here (matched by the blind index of
their ID number), half are new. ``suite`` picks the partner's signatures: ES256
(international) or SM2SM3 (national, both regions on that suite)."""

from __future__ import annotations

import random
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
from joserfc.jwk import ECKey

from ehr_service.exchange import envelope, suites
from ehr_service.exchange.partners import PartnerRegistry
from ehr_service.exchange.service import Exchange
from ehr_service.interactions.context import RequestContext
from ehr_service.mpi.idnumber import ID_NUMBER_SYSTEM, check_character
from ehr_service.security.caller import SERVICE, Caller
from ehr_service.security.scopes import parse_scopes
from ehr_service.security.sm2 import SM2Key

HTU = "http://bench.test/exchange/v1/bundles"
LAB = [
    {
        "coding": [
            {
                "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                "code": "laboratory",
            }
        ]
    }
]
LOINC = ["2345-7", "4548-4", "2160-0", "2823-3", "2951-2", "718-7", "6690-2", "1742-6"]


def _number(rng: random.Random, index: int) -> str:
    first17 = (
        f"510104{1950 + index % 60:04d}{1 + index % 12:02d}{1 + index % 28:02d}{index % 1000:03d}"
    )
    return first17 + check_character(first17)


def _message(rng: random.Random, index: int, results: int) -> bytes:
    number = _number(rng, index)
    entries: list[dict[str, Any]] = [
        {
            "resource": {
                "resourceType": "Patient",
                "id": f"p{index}",
                "identifier": [
                    {"system": ID_NUMBER_SYSTEM, "value": number},
                    {"system": "urn:sichuan:record-number", "value": f"SC{index:08d}"},
                ],
                "gender": "female" if int(number[16]) % 2 == 0 else "male",
                "birthDate": f"{number[6:10]}-{number[10:12]}-{number[12:14]}",
            }
        }
    ]
    for n in range(results):
        entries.append(
            {
                "resource": {
                    "resourceType": "Observation",
                    "id": f"o{index}-{n}",
                    "status": "final",
                    "category": LAB,
                    "code": {"coding": [{"system": "http://loinc.org", "code": rng.choice(LOINC)}]},
                    "subject": {"reference": f"Patient/p{index}"},
                    "effectiveDateTime": f"{2000 + n % 26}-0{1 + n % 9}-1{n % 10}T08:00:00+08:00",
                    "valueQuantity": {"value": round(rng.uniform(3, 9), 2), "unit": "mmol/L"},
                }
            }
        )
    return orjson.dumps({"resourceType": "Bundle", "type": "collection", "entry": entries})


def run(
    name: str, url: str, messages: int = 200, results: int = 20, suite: str = "international"
) -> dict[str, Any]:
    from ehr_service.app import build_services
    from ehr_service.config import Settings
    from ehr_service.storage.migrate import upgrade

    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        services = build_services(
            Settings(database_url=url, data_dir=Path(tmp), exchange_id="chongqing",
                     environment="test", crypto_suite=suite)
        )  # fmt: skip
        upgrade(services.database, services.settings.migrations_dir)
        try:
            key: Any = (
                SM2Key.generate()
                if suite == "national"
                else ECKey.generate_key("P-256", private=True)
            )
            alg = suites.DEFAULT_ALG[suite]
            jwks = Path(tmp) / "jwks.json"
            jwks.write_bytes(
                orjson.dumps({"keys": [key.as_dict(private=False) | {"kid": key.thumbprint()}]})
            )
            PartnerRegistry(services.unit).add(
                "sichuan", name="Sichuan", region="sichuan", audience="sichuan", jwks=str(jwks),
                allowed_types=["Observation"], suite=suite,
            )  # fmt: skip
            exchange = Exchange(services)
            exchange.keys.ensure_active(suite)
            base = RequestContext(services, "http://bench.test/fhir", "bench", caller=SERVICE)
            # half the residents already have a record here
            from ehr_service.interactions import create

            with services.unit.write() as conn:
                for index in range(0, messages, 2):
                    patient = orjson.loads(_message(rng, index, 0))["entry"][0]["resource"]
                    del patient["id"]
                    create.create(conn, base, "Patient", patient)
            partner = Caller(
                subject="sichuan", client_id="sichuan", authenticated=True,
                grants=parse_scopes("system/Observation.cu"),
            )  # fmt: skip
            ctx = replace(base, caller=partner, interaction="exchange_receive")
            bodies = [_message(rng, index, results) for index in range(messages)]
            signed = [
                (body, {suite: envelope.sign(body, key, kid=key.thumbprint(), alg=alg,
                                             iss="sichuan", aud="chongqing", htm="POST",
                                             htu=HTU)})
                for body in bodies
            ]  # fmt: skip
            started = time.perf_counter()
            for body, signature in signed:
                exchange.inbound.verify(body, signature, HTU)
            verify_seconds = time.perf_counter() - started
            started = time.perf_counter()
            for body, signature in signed:
                reply = exchange.inbound.receive(ctx, body, signature, HTU)
                assert reply.status == 200
            ingest_seconds = time.perf_counter() - started
            started = time.perf_counter()
            for body in bodies[:100]:
                exchange.archive.sign(body, aud="sichuan", htm="POST", htu=HTU,
                                      suites_used=(suite,))  # fmt: skip
            sign_ms = (time.perf_counter() - started) / min(100, len(bodies)) * 1000
        finally:
            services.database.dispose()
    stored = messages * (results + 1) + messages // 2  # results, a Provenance each, new residents
    return {
        "backend": name,
        "suite": suite,
        "messages": messages,
        "results_per_message": results,
        "message_kib": round(sum(len(b) for b in bodies) / len(bodies) / 1024, 1),
        "messages_per_s": round(messages / ingest_seconds, 1),
        "results_per_s": round(messages * results / ingest_seconds),
        "stored_resources_per_s": round(stored / ingest_seconds),
        "verify_ms_per_message": round(verify_seconds / messages * 1000, 3),
        "verify_share_of_ingest": round(verify_seconds / ingest_seconds, 4),
        "sign_ms_per_message": round(sign_ms, 3),
    }
