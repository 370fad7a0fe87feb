"""Concurrent writers: optimistic locking gives one winner and no history gaps."""

from __future__ import annotations

import asyncio

import httpx

from ehr_service.app import create_app
from ehr_service.interactions.context import Services
from tests.helpers import FHIR_JSON, bearer, patient


async def _race(services: Services, requests: list[dict]) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app=create_app(services=services))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers=bearer(services.settings)
    ) as client:
        return await asyncio.gather(*(client.request(**r) for r in requests))


def _versions(client_services: Services, pid: str) -> list[int]:
    async def fetch() -> list[int]:
        transport = httpx.ASGITransport(app=create_app(services=client_services))
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://testserver",
            headers=bearer(client_services.settings),
        ) as c:
            bundle = (await c.get(f"/fhir/Patient/{pid}/_history?_count=100")).json()
        return [int(e["response"]["etag"][3:-1]) for e in bundle["entry"]]

    return asyncio.run(fetch())


def test_twenty_updates_with_the_same_if_match(services: Services) -> None:
    [created] = asyncio.run(
        _race(
            services,
            [{"method": "POST", "url": "/fhir/Patient", "json": patient(), "headers": FHIR_JSON}],
        )
    )
    body = created.json()
    requests = [
        {
            "method": "PUT",
            "url": f"/fhir/Patient/{body['id']}",
            "json": {**body, "birthDate": f"1970-01-{i + 1:02d}"},
            "headers": {**FHIR_JSON, "If-Match": 'W/"1"'},
        }
        for i in range(20)
    ]
    responses = asyncio.run(_race(services, requests))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [412] * 19, statuses
    assert _versions(services, body["id"]) == [2, 1]


def test_twenty_updates_without_if_match_all_land_in_order(services: Services) -> None:
    [created] = asyncio.run(
        _race(
            services,
            [{"method": "POST", "url": "/fhir/Patient", "json": patient(), "headers": FHIR_JSON}],
        )
    )
    body = created.json()
    requests = [
        {
            "method": "PUT",
            "url": f"/fhir/Patient/{body['id']}",
            "json": {**body, "birthDate": f"1970-01-{i + 1:02d}"},
            "headers": FHIR_JSON,
        }
        for i in range(20)
    ]
    responses = asyncio.run(_race(services, requests))
    assert sorted(r.status_code for r in responses) == [200] * 20
    assert _versions(services, body["id"]) == list(range(21, 0, -1))


def test_concurrent_update_as_create_makes_one_resource(services: Services) -> None:
    requests = [
        {
            "method": "PUT",
            "url": "/fhir/Patient/same-id",
            "json": patient(id="same-id"),
            "headers": FHIR_JSON,
        }
        for _ in range(10)
    ]
    responses = asyncio.run(_race(services, requests))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 9 + [201], statuses
    assert _versions(services, "same-id") == list(range(10, 0, -1))
