"""Two regions of different cryptographic suites (exchange/suites.py): Chongqing runs
the national suite only (SM2 with SM3), Sichuan both. Between them only SM2SM3 is
used: push with receipts, pull, tampering, replay, an ES256-only message refused,
key rotation and verification years later; on SQLite and PostgreSQL."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from ehr_service.app import build_services, create_app
from ehr_service.config import Settings
from ehr_service.exchange import envelope, suites
from ehr_service.exchange.partners import PartnerError, PartnerRegistry
from ehr_service.storage.tables import exchange_message
from tests.api.test_exchange import counts, female_number, message
from tests.api.test_exchange_regions import TYPES, Region, _received, _resident_with_result, _rows
from tests.conftest import fresh_database, truncate_all
from tests.helpers import FHIR_JSON, bearer, make_id_number


@pytest.fixture(scope="session")
def second_pg(pg_url: str) -> str:
    """A second PostgreSQL database, for the second region."""
    from ehr_service.storage.database import Database
    from ehr_service.storage.migrate import upgrade

    url = fresh_database(pg_url, "sm2")
    database = Database(url)
    upgrade(database, Settings().migrations_dir)
    database.dispose()
    return url


def _url(name: str, database_url: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if database_url.startswith("sqlite"):
        target = tmp_path / f"{name}.sqlite3"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), target)
        return f"sqlite:///{target}"
    if name == "chongqing":
        return database_url
    url: str = request.getfixturevalue("second_pg")
    truncate_all(url)
    return url


def make_region(name: str, url: str, tmp_path: Path, suite: str) -> Region:
    services = build_services(
        Settings(
            environment="test", database_url=url, data_dir=tmp_path / name, exchange_id=name,
            exchange_max_attempts=3, exchange_feed_settle_seconds=0, crypto_suite=suite,
        )
    )  # fmt: skip
    client = TestClient(
        create_app(services=services),
        base_url=f"http://{name}.test",
        raise_server_exceptions=False,
        headers=bearer(services.settings),
    )
    client.__enter__()  # the lifespan makes the first key of each suite
    return Region(name, services, client)


def jwks_file(region: Region, tmp_path: Path) -> str:
    path = tmp_path / f"{region.name}-jwks.json"
    path.write_bytes(orjson.dumps(region.client.get("/.well-known/jwks.json").json()))
    return str(path)


def register(home: Region, partner: Region, tmp_path: Path, suite: str) -> None:
    PartnerRegistry(home.services.unit).add(
        partner.name, name=partner.name.title(), region=partner.name, audience=partner.name,
        jwks=jwks_file(partner, tmp_path), endpoint=f"{partner.url}/exchange/v1/bundles",
        allowed_types=TYPES, suite=suite,
    )  # fmt: skip
    scopes = " ".join(f"system/{t}.cu" for t in TYPES)
    header = bearer(partner.services.settings, scopes, subject=home.name, client_id=home.name)
    token = header["Authorization"].split(" ", 1)[1]
    target = home.services.settings.data_dir / "keys" / "partner-tokens" / f"{partner.name}.jwt"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(token)


@pytest.fixture
def regions(
    database_url: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[Region, Region]]:
    chongqing = make_region(
        "chongqing", _url("chongqing", database_url, request, tmp_path), tmp_path, "national"
    )
    sichuan = make_region("sichuan", _url("sichuan", database_url, request, tmp_path), tmp_path,
                          "both")  # fmt: skip
    register(chongqing, sichuan, tmp_path, "both")
    register(sichuan, chongqing, tmp_path, "national")
    yield chongqing, sichuan
    for region in (chongqing, sichuan):
        region.client.__exit__(None, None, None)
        region.services.database.dispose()


def _algs(region: Region) -> list[str]:
    with region.services.unit.read() as conn:
        return [r.alg for r in conn.execute(sa.select(exchange_message)).all()]


def test_the_jwks_publish_sm2_keys_by_suite(regions: tuple[Region, Region]) -> None:
    chongqing, sichuan = regions
    national = chongqing.client.get("/.well-known/jwks.json").json()["keys"]
    assert [(k["kty"], k["crv"], k["alg"], k["status"]) for k in national] == [
        ("EC", "SM2", "SM2SM3", "active")
    ]
    assert {k["alg"] for k in sichuan.client.get("/.well-known/jwks.json").json()["keys"]} == {
        "ES256", "SM2SM3",
    }  # fmt: skip
    assert "d" not in national[0]


def test_push_and_receipt_use_sm2_only_and_verify_again(regions: tuple[Region, Region]) -> None:
    chongqing, sichuan = regions
    number = make_id_number("500103", "19750601", "135")
    _resident_with_result(chongqing, number)
    sent: list[Any] = []

    def spy(request: Any) -> Any:
        sent.append(dict(request.headers))
        return sichuan.client.post(str(request.url), content=request.content,
                                   headers=dict(request.headers))  # fmt: skip

    import httpx

    client = httpx.Client(transport=httpx.MockTransport(lambda r: _relay(spy(r))))
    report = chongqing.exchange(client=client).outbound.push()
    assert (report.sent, report.errors) == (1, [])
    headers = {k.lower() for k in sent[0]}
    assert suites.HEADER_SM2.lower() in headers and envelope.HEADER.lower() not in headers
    assert len(_received(sichuan, number)) == 1
    assert _algs(chongqing) == ["SM2SM3"] and _algs(sichuan) == ["SM2SM3"]
    assert [v.ok for v in chongqing.exchange().archive.verify_all()] == [True]
    assert [v.ok for v in sichuan.exchange().archive.verify_all()] == [True]
    provenance = sichuan.client.get("/fhir/Provenance").json()["entry"][0]["resource"]
    assert len(provenance["signature"]) == 1


def _relay(response: Any) -> Any:
    import httpx

    signed = suites.headers(suites.join(suites.from_headers(response.headers.get)))
    return httpx.Response(response.status_code, content=response.content, headers=signed)


def test_pull_reads_an_sm2_signed_feed(regions: tuple[Region, Region]) -> None:
    chongqing, sichuan = regions
    number = make_id_number("510104", "19750601", "135")
    _resident_with_result(sichuan, number, 4.9)
    feed = sichuan.client.get(
        "/exchange/v1/feed",
        headers=bearer(sichuan.services.settings, "system/Observation.cu", subject="chongqing",
                       client_id="chongqing"),
    )  # fmt: skip
    assert feed.status_code == 200
    assert suites.HEADER_SM2 in feed.headers and envelope.HEADER not in feed.headers
    # PostgreSQL: the feed holds back rows newer than any transaction open in the
    # cluster (another test worker's), so the pull may find nothing for a moment
    deadline = time.monotonic() + 30
    outbound = chongqing.exchange(client=sichuan.client).outbound
    while (pulled := outbound.pull("sichuan", chongqing.ctx())) == 0:
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert pulled == 1
    assert [r["valueQuantity"]["value"] for r in _received(chongqing, number)] == [4.9]
    assert all(v.ok for v in chongqing.exchange().archive.verify_all())


def _post(region: Region, body: bytes, headers: dict[str, str]) -> Any:
    token = bearer(region.services.settings, " ".join(f"system/{t}.cu" for t in TYPES),
                   subject="sichuan", client_id="sichuan")  # fmt: skip
    return region.client.post("/exchange/v1/bundles", content=body,
                              headers={**FHIR_JSON, **token, **headers})  # fmt: skip


def _signed(sichuan: Region, body: bytes, *used: str) -> dict[str, str]:
    signature, _ = sichuan.exchange().archive.sign(
        body, aud="chongqing", htm="POST", htu="http://chongqing.test/exchange/v1/bundles",
        suites_used=used,
    )  # fmt: skip
    return suites.headers(signature)


def _refused(response: Any, status: int, words: str) -> None:
    assert response.status_code == status, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert words in outcome["issue"][0]["diagnostics"], outcome


def test_a_national_region_refuses_es256_only_and_tampering(regions: tuple[Region, Region]) -> None:
    chongqing, sichuan = regions
    body = message(female_number())
    before = counts(chongqing.services)
    # ES256 only, though Sichuan could sign both: the national suite is required
    _refused(_post(chongqing, body, _signed(sichuan, body, "international")), 403,
             "X-Exchange-Signature-SM2")  # fmt: skip
    # an ES256 JWS carried in the SM2 header is not an SM2 signature
    es256 = _signed(sichuan, body, "international")[envelope.HEADER]
    _refused(_post(chongqing, body, {suites.HEADER_SM2: es256}), 403, "[algorithm]")
    # tampered bytes, a swapped signature
    good = _signed(sichuan, body, "national")
    _refused(_post(chongqing, body.replace(b"5.8", b"9.8"), good), 403, "[bad-signature]")
    other = _signed(sichuan, message(female_number(), value=6.1), "national")
    header, _, _ = good[suites.HEADER_SM2].split(".")
    forged = f"{header}..{other[suites.HEADER_SM2].split('.')[2]}"
    _refused(_post(chongqing, body, {suites.HEADER_SM2: forged}), 403, "[bad-signature]")
    _refused(_post(chongqing, body, {}), 400, "X-Exchange-Signature")
    assert counts(chongqing.services) == before  # nothing of a refused message is stored
    # the partner registered for the international suite only: nothing is shared
    PartnerRegistry(chongqing.services.unit).update("sichuan", suite="international")
    _refused(_post(chongqing, body, good), 403, "[suite]")
    assert counts(chongqing.services) == before
    PartnerRegistry(chongqing.services.unit).update("sichuan", suite="both")
    accepted = _post(chongqing, body, good)
    assert accepted.status_code == 200, accepted.text
    assert set(accepted.headers) >= {suites.HEADER_SM2.lower()}
    assert envelope.HEADER.lower() not in accepted.headers


def test_replay_and_retry_with_sm2(regions: tuple[Region, Region]) -> None:
    chongqing, sichuan = regions
    body = message(female_number())
    signed = _signed(sichuan, body, "national")
    first = _post(chongqing, body, signed)
    assert first.status_code == 200
    after = counts(chongqing.services)
    retry = _post(chongqing, body, signed)  # the same bytes: the first answer, signed afresh
    assert retry.status_code == 200 and retry.content == first.content
    assert retry.headers[suites.HEADER_SM2] != first.headers[suites.HEADER_SM2]
    # the same jti over other bytes: a replay
    jti = envelope.protected_header(signed[suites.HEADER_SM2])["jti"]
    keys = sichuan.exchange().keys
    info, sm2_key = keys.active("national")  # type: ignore[misc]
    other = message(female_number(), value=7.7)
    replayed = envelope.sign(other, sm2_key, kid=info.kid, alg=info.alg, iss="sichuan",
                             aud="chongqing", htm="POST",
                             htu="http://chongqing.test/exchange/v1/bundles", jti=jti)  # fmt: skip
    _refused(_post(chongqing, other, {suites.HEADER_SM2: replayed}), 409, "[replay]")
    assert counts(chongqing.services) == after


def test_sm2_key_rotation_and_verification_later(
    regions: tuple[Region, Region], tmp_path: Path
) -> None:
    chongqing, sichuan = regions
    number = make_id_number("500103", "19750601", "135")
    outbound = chongqing.exchange(client=sichuan.client).outbound
    _resident_with_result(chongqing, number)
    assert outbound.push().sent == 1
    keys = chongqing.exchange().keys
    old = keys.active("national")
    assert old is not None
    rotated = keys.rotate("SM2SM3")
    assert rotated.alg == "SM2SM3" and rotated.kid != old[0].kid
    # Sichuan has not seen the new key yet (pinned from a file): refused, then refreshed
    _resident_with_result(chongqing, number, 6.3)
    assert outbound.push().sent == 0
    PartnerRegistry(sichuan.services.unit).update("chongqing", jwks=jwks_file(chongqing, tmp_path))
    from datetime import timedelta

    from ehr_service.fhir.primitives import utc_now

    assert outbound.push(now=utc_now() + timedelta(minutes=5)).sent == 1
    assert [r.state for r in _rows(chongqing)] == ["sent", "sent"]
    # years later: both messages verify, the first with the retired key
    assert [v.ok for v in sichuan.exchange().archive.verify_all()] == [True, True]
    assert [v.ok for v in chongqing.exchange().archive.verify_all()] == [True, True]
    # the old key revoked: what it signed no longer verifies, the rest does
    keys.revoke(old[0].kid)
    verdicts = sorted(v.ok for v in chongqing.exchange().archive.verify_all())
    assert verdicts == [False, True]


def test_a_partner_suite_needs_keys_of_that_suite(regions: tuple[Region, Region]) -> None:
    _, sichuan = regions
    registry = PartnerRegistry(sichuan.services.unit)
    with pytest.raises(PartnerError, match="ES256 or Ed25519"):
        registry.update("chongqing", suite="both")  # Chongqing publishes SM2 keys only
    with pytest.raises(PartnerError, match="one of"):
        registry.update("chongqing", suite="quantum")
    assert registry.get("chongqing").suite == "national"


def test_both_and_both_sign_twice_and_each_signature_is_required(
    database_url: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    chongqing = make_region("chongqing", _url("chongqing", database_url, request, tmp_path),
                            tmp_path, "both")  # fmt: skip
    sichuan = make_region("sichuan", _url("sichuan", database_url, request, tmp_path), tmp_path,
                          "both")  # fmt: skip
    try:
        register(chongqing, sichuan, tmp_path, "both")
        register(sichuan, chongqing, tmp_path, "both")
        body = message(female_number())
        signed = _signed(sichuan, body, "international", "national")
        assert set(signed) == {envelope.HEADER, suites.HEADER_SM2}
        # each signature verifies alone, with the same claims
        claims = [envelope.protected_header(v) for v in signed.values()]
        assert {c["jti"] for c in claims} == {claims[0]["jti"]}
        assert {c["alg"] for c in claims} == {"ES256", "SM2SM3"}
        for name in signed:
            _refused(_post(chongqing, body, {name: signed[name]}), 403, "[suite]")
        accepted = _post(chongqing, body, signed)
        assert accepted.status_code == 200, accepted.text
        assert {envelope.HEADER.lower(), suites.HEADER_SM2.lower()} <= set(accepted.headers)
        assert _algs(chongqing) == ["ES256 SM2SM3"]
        assert [v.ok for v in chongqing.exchange().archive.verify_all()] == [True]
        provenance = chongqing.client.get("/fhir/Provenance").json()["entry"][0]["resource"]
        assert len(provenance["signature"]) == 2
    finally:
        for region in (chongqing, sichuan):
            region.client.__exit__(None, None, None)
            region.services.database.dispose()
