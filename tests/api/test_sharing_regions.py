"""Two regions, the receiving one under EHR_SHARING_POLICY=consent-required: only the
results of residents who gave it their separate consent cross; pushed or pulled,
the rest are refused per resident and leave nothing behind. Region set-up as in
tests/api/test_exchange_regions.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from ehr_service.app import create_app
from ehr_service.storage.tables import resource
from tests.api.test_exchange_regions import (
    Region,
    _received,
    _region,
    _register,
    _resident_with_result,
    _rows,
)
from tests.helpers import FHIR_JSON, bearer, id_identifier, make_id_number

SEPARATE = "pipl-separate-consent"


@pytest.fixture
def regions(sqlite_template: Path, tmp_path: Path) -> Iterator[tuple[Region, Region]]:
    chongqing = _region("chongqing", tmp_path, sqlite_template, region="chongqing")
    sichuan = _region("sichuan", tmp_path, sqlite_template, region="sichuan",
                      sharing_policy="consent-required")  # fmt: skip
    _register(chongqing, sichuan, tmp_path)
    _register(sichuan, chongqing, tmp_path)
    yield chongqing, sichuan
    for region in (chongqing, sichuan):
        region.client.__exit__(None, None, None)
        region.services.database.dispose()


def _known(region: Region, number: str) -> str:
    body = {"resourceType": "Patient", "identifier": [id_identifier(number)],
            "gender": "male", "birthDate": "1975-06-01"}  # fmt: skip
    created = region.client.post("/fhir/Patient", json=body, headers=FHIR_JSON)
    assert created.status_code == 201
    pid: str = created.json()["id"]
    return pid


def _permit(region: Region, pid: str, to: str) -> None:
    headers = bearer(region.services.settings, "patient/*.cruds", patient=pid)
    with TestClient(create_app(services=region.services), raise_server_exceptions=False,
                    headers=headers) as me:  # fmt: skip
        assert me.post("/citizen/v1/me/sharing-permits", json={"region": to}).status_code == 201


def _count(region: Region, resource_type: str) -> int:
    query = sa.select(sa.func.count()).select_from(resource)
    with region.services.unit.read() as conn:
        return int(conn.execute(query.where(resource.c.res_type == resource_type)).scalar_one())


def _provenance_reasons(region: Region) -> list[str]:
    found = region.client.get("/fhir/Provenance").json()
    return [c["code"] for e in found.get("entry", [])
            for r in e["resource"].get("reason", []) for c in r["coding"]]  # fmt: skip


def test_pushed_results_cross_only_for_consenting_residents(
    regions: tuple[Region, Region],
) -> None:
    chongqing, sichuan = regions
    agreed, declined, unknown = (make_id_number("500103", "19750601", s)
                                 for s in ("135", "157", "179"))  # fmt: skip
    for number in (agreed, declined, unknown):
        _resident_with_result(chongqing, number)
    assert len(_rows(chongqing)) == 3  # Chongqing runs opt-out: it queues everyone
    resident = _known(sichuan, agreed)
    _permit(sichuan, resident, "chongqing")
    _known(sichuan, declined)  # known in Sichuan, but never consented there
    patients_before = _count(sichuan, "Patient")
    report = chongqing.exchange(client=sichuan.client).outbound.push()
    assert (report.sent, report.failed) == (3, 0), report.errors
    assert len(_received(sichuan, agreed)) == 1
    assert _received(sichuan, declined) == []
    assert _count(sichuan, "Observation") == 1
    assert _count(sichuan, "Patient") == patients_before  # no record made for `unknown`
    assert _provenance_reasons(sichuan) == [SEPARATE]  # received on the resident's consent
    # the message and Sichuan's signed receipt (naming each refusal) verify again
    assert [v.ok for v in chongqing.exchange().archive.verify_all()] == [True]
    assert [r.state for r in _rows(chongqing)] == ["sent"] * 3


def test_a_message_of_non_consenting_residents_only_is_refused_whole(
    regions: tuple[Region, Region],
) -> None:
    chongqing, sichuan = regions
    number = make_id_number("500103", "19750601", "157")
    _resident_with_result(chongqing, number)
    _known(sichuan, number)
    report = chongqing.exchange(client=sichuan.client).outbound.push()
    assert report.sent == 0 and report.failed == 1 and "403" in report.errors[0]
    assert _count(sichuan, "Observation") == 0 and _count(sichuan, "Provenance") == 0


def test_the_consent_required_region_shares_only_with_consent(
    regions: tuple[Region, Region],
) -> None:
    chongqing, sichuan = regions
    agreed, declined = (make_id_number("510104", "19750601", s) for s in ("135", "157"))
    first, _ = _resident_with_result(sichuan, agreed, 4.9)
    _permit(sichuan, first, "chongqing")
    _resident_with_result(sichuan, agreed, 5.1)  # after the permit: queued
    _resident_with_result(sichuan, declined, 6.0)
    queued: list[Any] = _rows(sichuan)
    assert len(queued) == 1  # the first result was stored before the permit
    pulled = chongqing.exchange(client=sichuan.client).outbound.pull("sichuan", chongqing.ctx())
    assert pulled == 1
    assert [r["valueQuantity"]["value"] for r in _received(chongqing, agreed)] == [5.1]
    assert _received(chongqing, declined) == []
