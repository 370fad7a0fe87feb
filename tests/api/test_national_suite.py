"""EHR_CRYPTO_SUITE on a real database (SQLite and PostgreSQL): ID numbers sealed with
SM4-GCM and indexed by HMAC-SM3, one record per resident while a deployment moves
between suites, ``keys rotate-data-key`` re-sealing and re-tokenising across them,
archived messages verifying again, and the audit chain across the hash switch."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from ehr_service.app import create_app
from ehr_service.audit.chain import verify
from ehr_service.audit.sealing import Sealer, chain_of
from ehr_service.cli import app as cli
from ehr_service.exchange.keys import SigningKeys
from ehr_service.interactions.context import Services
from ehr_service.storage.audit import chain_hash
from ehr_service.storage.tables import (
    audit_block,
    audit_event,
    exchange_message,
    resident_id_number,
    resource,
    resource_version,
    search_token,
)
from tests.api.test_exchange import (  # noqa: F401 - region: a fixture
    Partner,
    female_number,
    message,
    post,
    region,
)
from tests.api.test_identity import _masked_client
from tests.api.test_write_path import fresh_services  # noqa: F401 - a fixture
from tests.helpers import (
    FHIR_JSON,
    ID_SYSTEM,
    bearer,
    id_identifier,
    make_id_number,
    patient,
    seal_all,
    snapshot,
    tamper,
)


def _resident(number: str) -> dict[str, Any]:
    return patient(identifier=[id_identifier(number)], gender="male", birthDate="1990-03-07")


def _services(client: TestClient) -> Services:
    services: Services = client.app.state.services  # type: ignore[attr-defined]
    return services


def _stored(services: Services) -> list[bytes]:
    with services.unit.read() as conn:
        return [bytes(r[0]) for r in conn.execute(sa.select(resource.c.content))] + [
            bytes(r[0]) for r in conn.execute(sa.select(resource_version.c.content))
        ]


def _claims(services: Services, patient_id: str) -> list[str]:
    with services.unit.read() as conn:
        rows = conn.execute(
            sa.select(resident_id_number.c.scheme, resident_id_number.c.blind_index).where(
                resident_id_number.c.patient_id == patient_id
            )
        ).all()
    for scheme, token in rows:  # the row's scheme is its token's
        assert token.startswith("blind:sm3:") == (scheme == "hmac-sm3")
    return sorted(r.scheme for r in rows)


def _identifier_tokens(services: Services, patient_id: str) -> list[str]:
    with services.unit.read() as conn:
        return [
            r.code
            for r in conn.execute(
                sa.select(search_token.c.code).where(
                    search_token.c.res_id == patient_id,
                    search_token.c.param == "identifier",
                    search_token.c.system == ID_SYSTEM,
                )
            )
        ]


def _found(client: TestClient, number: str) -> list[str]:
    bundle = client.get(f"/fhir/Patient?identifier={ID_SYSTEM}|{number}").json()
    return [e["resource"]["id"] for e in bundle.get("entry", [])]


def _number_of(client: TestClient, patient_id: str) -> list[str]:
    body = client.get(f"/fhir/Patient/{patient_id}").json()
    return [i["value"] for i in body["identifier"] if i.get("system") == ID_SYSTEM]


def _rotate(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], suite: str) -> str:
    for name, value in {**env, "EHR_CRYPTO_SUITE": suite}.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(cli, ["keys", "rotate-data-key", "--no-wait"])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def cli_env(database_url: str, tmp_path: Path) -> dict[str, str]:
    return {"EHR_DATABASE_URL": database_url, "EHR_DATA_DIR": str(tmp_path / "data")}


def test_national_numbers_are_sm4_sealed_and_hmac_sm3_indexed(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(crypto_suite="national")
    services = _services(client)
    assert services.identity.protection.keyring.active.cipher == "SM4GCM"  # a fresh key file
    number = make_id_number(sequence="731")
    created = client.post("/fhir/Patient", json=_resident(number), headers=FHIR_JSON)
    assert created.status_code == 201, created.text
    pid = created.json()["id"]
    stored = _stored(services)
    assert all(number.encode() not in c for c in stored)
    assert any(b'"v2.SM4GCM.' in c for c in stored) and not any(b'"v1.' in c for c in stored)
    assert _number_of(client, pid) == [number]  # allowed callers: opened
    masked = _masked_client(services).get(f"/fhir/Patient/{pid}").json()
    assert [i["value"] for i in masked["identifier"] if i["system"] == ID_SYSTEM] == [
        number[:4] + "*" * 10 + number[-4:]
    ]
    assert "SM4GCM" not in str(masked)  # and the seal is not shown to them
    assert [t.startswith("blind:sm3:") for t in _identifier_tokens(services, pid)] == [True]
    assert _claims(services, pid) == ["hmac-sm3"]  # nothing of another scheme to guard
    assert _found(client, number) == [pid]


def test_one_record_per_number_across_the_suite_switch_and_rotations(
    make_client: Callable[..., TestClient],
    cli_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    international = make_client()
    services = _services(international)
    number, other = make_id_number(sequence="741"), make_id_number(sequence="751")
    pid = international.post("/fhir/Patient", json=_resident(number), headers=FHIR_JSON)
    pid = pid.json()["id"]
    assert _claims(services, pid) == ["hmac-sha256", "hmac-sm3"]
    refused = international.post("/fhir/Patient", json=_resident(number), headers=FHIR_JSON)
    assert refused.status_code == 409
    with services.unit.write() as conn:  # as written before this release: one claim
        conn.execute(
            sa.delete(resident_id_number).where(resident_id_number.c.scheme != "hmac-sha256")
        )

    national = make_client(crypto_suite="national")
    before = snapshot(services)
    again = national.post("/fhir/Patient", json=_resident(number.lower()), headers=FHIR_JSON)
    assert (again.status_code, again.json()) == (409, refused.json())  # the same outcome
    assert snapshot(services) == before
    assert _found(national, number) == [pid]  # by its HMAC-SHA-256 token
    second = national.post("/fhir/Patient", json=_resident(other), headers=FHIR_JSON).json()["id"]
    assert _claims(services, second) == ["hmac-sha256", "hmac-sm3"]  # old claims remain

    output = _rotate(monkeypatch, cli_env, "national")
    assert "(SM4GCM)" in output and "claims of other schemes dropped" in output
    stored = _stored(services)
    assert not any(b'"v1.' in c for c in stored) and any(b'"v2.SM4GCM.' in c for c in stored)
    assert [t.startswith("blind:sm3:") for t in _identifier_tokens(services, pid)] == [True]
    assert _claims(services, pid) == _claims(services, second) == ["hmac-sm3"]
    for client in (national, international):  # a server started before reloads the keys
        assert _found(client, number) == [pid]
        assert _number_of(client, pid) == [number]
        before = snapshot(services)
        duplicate = client.post("/fhir/Patient", json=_resident(number), headers=FHIR_JSON)
        assert (duplicate.status_code, duplicate.json()) == (409, refused.json())
        assert snapshot(services) == before
    history = national.get(f"/fhir/Patient/{pid}/_history/1").json()
    assert [i["value"] for i in history["identifier"] if i["system"] == ID_SYSTEM] == [number]

    _rotate(monkeypatch, cli_env, "international")  # and back
    stored = _stored(services)
    assert not any(b'"v2.SM4GCM.' in c for c in stored) and any(b'"v1.' in c for c in stored)
    assert [t.startswith("blind:sm3:") for t in _identifier_tokens(services, pid)] == [False]
    assert _claims(services, pid) == ["hmac-sha256", "hmac-sm3"]
    assert _found(international, number) == [pid] and _number_of(international, pid) == [number]
    assert (
        national.post("/fhir/Patient", json=_resident(other), headers=FHIR_JSON).status_code == 409
    )
    listed = CliRunner().invoke(cli, ["keys", "data-keys"]).output
    assert "SM4GCM" in listed and "A256GCM" in listed


def test_a_deleted_record_s_number_stays_free_after_rotation(
    make_client: Callable[..., TestClient],
    cli_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = make_client()
    number = make_id_number(sequence="761")
    pid = client.post("/fhir/Patient", json=_resident(number), headers=FHIR_JSON).json()["id"]
    assert client.delete(f"/fhir/Patient/{pid}").status_code in {200, 204}
    _rotate(monkeypatch, cli_env, "national")
    assert _claims(_services(client), pid) == []
    national = make_client(crypto_suite="national")
    assert (
        national.post("/fhir/Patient", json=_resident(number), headers=FHIR_JSON).status_code == 201
    )


def test_archived_messages_verify_again_after_the_switch_to_sm4(
    region: tuple[TestClient, Services, Partner],  # noqa: F811
    cli_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, services, partner = region
    bodies = [message(female_number(), obs_id=f"n{i}") for i in range(2)]
    for body in bodies:
        assert post(client, services, body, partner.sign(body)).status_code == 200

    def sealed_bodies() -> list[bytes]:
        with services.unit.read() as conn:
            return [bytes(r[0]) for r in conn.execute(sa.select(exchange_message.c.body))]

    assert not any(b.startswith(b"SM4GCM:") for b in sealed_bodies())
    env = {**cli_env, "EHR_EXCHANGE_ID": "chongqing"}
    output = _rotate(monkeypatch, env, "both")  # both: national for new data
    assert "re-sealed 2 archived messages" in output
    assert all(b.startswith(b"SM4GCM:") for b in sealed_bodies())
    assert all(body not in b for body in bodies for b in sealed_bodies())
    verified = CliRunner().invoke(cli, ["exchange", "verify"])
    assert verified.exit_code == 0, verified.output
    assert "2 messages checked, 0 failed" in verified.output
    # a message sealed by SM4 and altered at rest is named, like an AES one
    with services.unit.write() as conn:
        first = conn.execute(sa.select(exchange_message).order_by(exchange_message.c.jti)).first()
        assert first is not None
        raw = bytearray(first.body)
        raw[-1] ^= 1
        conn.execute(
            sa.update(exchange_message)
            .where(exchange_message.c.jti == first.jti)
            .values(body=bytes(raw))
        )
    failed = CliRunner().invoke(cli, ["exchange", "verify"])
    assert failed.exit_code == 1 and "cannot be opened" in failed.output
    assert "2 messages checked, 1 failed" in failed.output


def _chain_names(services: Services) -> list[str]:
    with services.unit.read() as conn:
        statements = conn.execute(sa.select(audit_block.c.statement).order_by(audit_block.c.number))
        return [chain_of(orjson.loads(bytes(r[0]))) for r in statements]


def test_audit_verify_holds_across_the_switch_from_sha256_to_sm3(
    fresh_services: Services,  # noqa: F811
) -> None:
    services = fresh_services  # a chain of its own, on either backend
    keys = SigningKeys(services.settings.signing_keys_dir)
    keys.ensure_active()
    with TestClient(create_app(services=services), raise_server_exceptions=False,
                    headers=bearer(services.settings)) as client:  # fmt: skip
        client.get("/fhir/Patient?name=x")
        seal_all(Sealer(services.unit, keys, interval=0))
        assert _chain_names(services) == ["sha256"]
        client.get("/fhir/Patient?name=y")
        client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON)
        seal_all(Sealer(services.unit, keys, interval=0, chain="sm3"))
    names = _chain_names(services)
    assert names[0] == "sha256" and set(names[1:]) == {"sm3"}
    verdict = verify(services.unit, keys)
    assert verdict.intact, verdict.reason
    assert verdict.events >= 3 and verdict.blocks == len(names)
    with services.unit.read() as conn:
        last = conn.execute(sa.select(audit_event).order_by(audit_event.c.position.desc())).first()
    assert last is not None
    sha256 = chain_hash(last.prev_hash, last.position, bytes(last.content))
    assert last.hash == chain_hash(last.prev_hash, last.position, bytes(last.content), "sm3")
    assert last.hash != sha256
    with tamper(services) as conn:  # its SM3 link rewritten as SHA-256
        conn.execute(
            sa.update(audit_event).where(audit_event.c.seq == last.seq).values(hash=sha256)
        )
    broken = verify(services.unit, keys)
    assert not broken.intact and broken.first_bad == last.position
    assert "altered" in broken.reason


@pytest.mark.parametrize("chain", ["sm3", "sha256"])
def test_a_block_that_names_an_unknown_chain_hash_is_named(
    fresh_services: Services,  # noqa: F811
    chain: str,
) -> None:
    services = fresh_services
    keys = SigningKeys(services.settings.signing_keys_dir)
    keys.ensure_active()
    with TestClient(create_app(services=services), raise_server_exceptions=False,
                    headers=bearer(services.settings)) as client:  # fmt: skip
        client.get("/fhir/Patient?name=z")
        seal_all(Sealer(services.unit, keys, interval=0, chain=chain))
    with tamper(services) as conn:
        block = conn.execute(sa.select(audit_block).order_by(audit_block.c.number)).first()
        assert block is not None
        statement = orjson.loads(bytes(block.statement)) | {"chain": "md5"}
        conn.execute(
            sa.update(audit_block)
            .where(audit_block.c.number == block.number)
            .values(statement=orjson.dumps(statement))
        )
    verdict = verify(services.unit, keys)
    assert not verdict.intact and verdict.first_bad == 1
    if chain == "sm3":  # its SM3 links no longer hold under the hash it now names
        assert verdict.reason == "its content or hash was altered"
    else:
        assert "names a chain hash this service does not know" in verdict.reason
    with pytest.raises(ValueError, match="unknown chain hash"):
        Sealer(services.unit, keys, chain="md5")
