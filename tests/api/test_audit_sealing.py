"""The audit chain without a global lock: events committed by concurrent requests
are all sealed, once each, in signed blocks; ``audit verify`` names a removed,
altered or reordered event and a forged block; an event's inclusion proof holds
against the published keys alone."""

from __future__ import annotations

import asyncio
import base64
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from ehr_service.app import create_app
from ehr_service.audit import proofs
from ehr_service.audit.chain import verify
from ehr_service.audit.sealing import Sealer, sign
from ehr_service.cli import app as cli
from ehr_service.exchange.keys import SigningKeys
from ehr_service.interactions.context import Services
from ehr_service.storage import audit as audit_store
from ehr_service.storage.tables import audit_block, audit_event
from tests.api.test_write_path import fresh_services, race  # noqa: F401 - a fixture
from tests.helpers import FHIR_JSON, bearer, patient, seal_all, seal_and_verify, tamper


def _keys(services: Services) -> SigningKeys:
    keys = SigningKeys(services.settings.signing_keys_dir)
    keys.ensure_active()
    return keys


def test_twenty_concurrent_readers_and_writers_are_sealed_complete_and_in_order(
    fresh_services: Services,  # noqa: F811
) -> None:
    services = fresh_services
    keys = _keys(services)
    sealer = Sealer(services.unit, keys, interval=0.02)  # sealing while they write
    sealer.start()
    try:
        first = asyncio.run(race(services, [
            {"method": "POST", "url": "/fhir/Patient", "json": patient(), "headers": FHIR_JSON}
            for _ in range(20)
        ]))  # fmt: skip
        ids = [r.json()["id"] for r in first]
        mixed: list[dict[str, Any]] = []
        for n in range(60):
            if n % 3 == 0:
                mixed.append({"method": "POST", "url": "/fhir/Patient", "json": patient(),
                              "headers": FHIR_JSON})  # fmt: skip
            elif n % 3 == 1:
                mixed.append({"method": "GET", "url": f"/fhir/Patient/{ids[n % 20]}"})
            else:
                mixed.append({"method": "GET", "url": f"/fhir/Patient?_id={ids[n % 20]}"})
        for start in range(0, 60, 20):  # 20 in flight at a time
            answers = asyncio.run(race(services, mixed[start : start + 20]))
            assert all(a.status_code in (200, 201) for a in answers), [a.text for a in answers]
    finally:
        sealer.stop()
    seal_all(sealer)  # PostgreSQL: other workers' transactions may hold the horizon back
    verdict = verify(services.unit, keys)
    assert verdict.intact, verdict.reason
    assert verdict.unsealed == 0 and verdict.events == 80 and verdict.blocks >= 1
    with services.unit.read() as conn:
        rows = conn.execute(
            sa.select(audit_event.c.seq, audit_event.c.position, audit_event.c.content)
        ).all()
    assert sorted(r.position for r in rows) == list(range(1, 81))  # each once, no gap
    assert all(orjson.loads(r.content)["id"] == str(r.seq) for r in rows)


@pytest.mark.pg
def test_an_event_that_commits_late_is_sealed_in_a_later_block(
    fresh_services: Services,  # noqa: F811
) -> None:
    """PostgreSQL: an event whose transaction commits after later ids were sealed is
    chained in the next round, once; an open transaction never holds sealing back."""
    services = fresh_services
    if not services.database.is_postgresql:
        pytest.skip("SQLite has one writer at a time: commits come in id order")
    event = services.auditor.new_event(
        interaction="read", status=200, caller=_caller(), patients=frozenset()
    )
    sealer = Sealer(services.unit, _keys(services), interval=0)
    opened, release = threading.Event(), threading.Event()

    def slow() -> None:
        with services.unit.write(audited=False) as conn:
            audit_store.append(conn, [event])  # the smaller id, committed last
            opened.set()
            release.wait(10)

    worker = threading.Thread(target=slow)
    worker.start()
    assert opened.wait(10)
    services.auditor.append_now(event)  # a later id, committed first
    try:
        assert sealer.seal() == 1  # what is committed is sealed, the open one waits
    finally:
        release.set()
        worker.join()
    assert sealer.seal() == 1
    verdict = verify(services.unit, sealer.keys)
    assert verdict.intact and verdict.events == 2 and verdict.blocks == 2
    with services.unit.read() as conn:
        order = (
            conn.execute(sa.select(audit_event.c.seq).order_by(audit_event.c.position))
            .scalars()
            .all()
        )
    assert order == sorted(order, reverse=True)  # commit order, not id order


def _caller() -> Any:
    from ehr_service.security.caller import Caller

    return Caller(subject="clerk", authenticated=True)


@pytest.fixture
def sealed(chain_services: Services) -> Services:
    verdict = seal_and_verify(chain_services)
    assert verdict.intact and verdict.events == 6 and verdict.blocks >= 1, verdict
    return chain_services


@pytest.fixture
def chain_services(services: Services) -> Services:
    if services.database.is_postgresql:
        pytest.skip("tampering tests run on their own SQLite chain")
    with TestClient(create_app(services=services), raise_server_exceptions=False,
                    headers=bearer(services.settings)) as client:  # fmt: skip
        for _ in range(3):
            client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON)
            client.get("/fhir/Patient")
    return services


def _tamper(services: Services, statement: Any) -> None:
    with tamper(services) as conn:
        conn.execute(statement)


def test_verify_names_a_forged_block_signature(sealed: Services) -> None:
    keys = _keys(sealed)
    with sealed.unit.read() as conn:
        block = conn.execute(sa.select(audit_block).order_by(audit_block.c.number)).first()
    assert block is not None
    header, _, signature = block.signature.split(".")
    forged = f"{header}..{signature[:-4]}{'AAAA' if signature[-4:] != 'AAAA' else 'BBBB'}"
    _tamper(sealed, sa.update(audit_block).where(audit_block.c.number == block.number)
            .values(signature=forged))  # fmt: skip
    verdict = verify(sealed.unit, keys)
    assert not verdict.intact and f"block {block.number}" in verdict.reason
    assert "signature" in verdict.reason
    # signed properly, but by a key that is not the region's
    other = SigningKeys(sealed.settings.data_dir / "someone-else")
    other.ensure_active()
    info, key = other.active() or (None, None)
    assert info is not None
    _tamper(sealed, sa.update(audit_block).where(audit_block.c.number == block.number)
            .values(signature=sign(bytes(block.statement), info.kid, info.alg, key)))  # fmt: skip
    verdict = verify(sealed.unit, keys)
    assert "not a block signature of the key it names" in verdict.reason  # the kid column
    _tamper(sealed, sa.update(audit_block).where(audit_block.c.number == block.number)
            .values(kid=info.kid))  # fmt: skip
    verdict = verify(sealed.unit, keys)
    assert "unknown or revoked" in verdict.reason
    # "signed" with alg none: never verified by what the header says
    none = base64.urlsafe_b64encode(orjson.dumps({"alg": "none", "kid": info.kid,
                                                  "typ": "ehr-audit-block+jws"}))  # fmt: skip
    _tamper(sealed, sa.update(audit_block).where(audit_block.c.number == block.number)
            .values(signature=none.rstrip(b"=").decode() + ".."))  # fmt: skip
    assert not verify(sealed.unit, keys).intact
    assert "unsigned" not in verify(sealed.unit, keys).reason


def test_verify_names_events_rewritten_with_their_hashes(sealed: Services) -> None:
    """Whoever can write the database but holds no key: alter an event and recompute
    every chain hash after it; the signed root still names the block."""
    from ehr_service.storage.audit import GENESIS, chain_hash

    with tamper(sealed) as conn:
        rows = conn.execute(sa.select(audit_event).order_by(audit_event.c.position)).all()
        prev = GENESIS
        for row in rows:
            content = bytes(row.content)
            if row.position == 2:
                content = content.replace(b'"outcome":"0"', b'"outcome":"4"')
            digest = chain_hash(prev, row.position, content)
            conn.execute(sa.update(audit_event).where(audit_event.c.seq == row.seq)
                         .values(content=content, prev_hash=prev, hash=digest))  # fmt: skip
            prev = digest
    verdict = verify(sealed.unit, _keys(sealed))
    assert not verdict.intact
    assert "altered" in verdict.reason or "differ" in verdict.reason


@pytest.mark.parametrize("how", ["removed", "altered", "reordered"])
def test_verify_names_the_event(sealed: Services, how: str) -> None:
    with sealed.unit.read() as conn:
        rows = {r.position: r for r in conn.execute(sa.select(audit_event))}
    if how == "removed":
        _tamper(sealed, sa.delete(audit_event).where(audit_event.c.position == 3))
    elif how == "altered":
        forged = bytes(rows[3].content).replace(b'"action":"', b'"action":"X')
        _tamper(sealed, sa.update(audit_event).where(audit_event.c.position == 3)
                .values(content=forged))  # fmt: skip
    else:
        for position in (3, 4):
            _tamper(sealed, sa.update(audit_event).where(audit_event.c.seq == rows[position].seq)
                    .values(position=-position))  # fmt: skip
        for position, other in ((3, 4), (4, 3)):
            _tamper(sealed, sa.update(audit_event).where(audit_event.c.position == -position)
                    .values(position=other))  # fmt: skip
    verdict = verify(sealed.unit, _keys(sealed))
    assert not verdict.intact and verdict.first_bad == 3, verdict
    if how == "removed":
        assert "missing" in verdict.reason
    else:
        assert verdict.event == rows[3 if how == "altered" else 4].seq


def test_an_inclusion_proof_holds_against_the_published_keys(sealed: Services) -> None:
    with sealed.unit.read() as conn:
        seq = conn.execute(sa.select(sa.func.max(audit_event.c.seq))).scalar_one()
    app = create_app(services=sealed)
    with TestClient(app, headers=bearer(sealed.settings, "ehr/audit")) as auditor:
        answer = auditor.get(f"/fhir/AuditEvent/{seq}/$inclusion-proof")
        assert answer.status_code == 200, answer.text
        proof = answer.json()
        jwks = auditor.get("/.well-known/jwks.json").json()
        event = auditor.get(f"/fhir/AuditEvent/{seq}")
        assert auditor.get("/fhir/AuditEvent/999999/$inclusion-proof").status_code == 404
    assert proof["resourceType"] == "Parameters"
    assert proofs.check(proof, jwks) == ""
    values = {p["name"]: p for p in proof["parameter"]}
    assert base64.b64decode(values["event"]["valueBase64Binary"]) == event.content
    forged = orjson.loads(event.content)
    forged["outcome"] = "8"
    values["event"]["valueBase64Binary"] = base64.b64encode(orjson.dumps(forged)).decode()
    assert "not in the block" in proofs.check(proof, jwks)
    assert "unknown" in proofs.check(answer.json(), {"keys": []})


def test_cli_seal_verify_and_proof(
    chain_services: Services, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("EHR_DATABASE_URL", chain_services.settings.effective_database_url)
    monkeypatch.setenv("EHR_DATA_DIR", str(chain_services.settings.data_dir))
    runner = CliRunner()
    sealed = runner.invoke(cli, ["audit", "seal"])
    assert sealed.exit_code == 0 and "sealed" in sealed.output
    verified = runner.invoke(cli, ["audit", "verify"])
    assert verified.exit_code == 0, verified.output
    assert "intact: 7 events in" in verified.output  # and the seal, an audited act itself
    proof = runner.invoke(cli, ["audit", "proof", "2"])
    assert proof.exit_code == 0, proof.output
    (tmp_path / "proof.json").write_text(proof.output)
    checked = runner.invoke(cli, ["audit", "check-proof", str(tmp_path / "proof.json")])
    assert checked.exit_code == 0 and "proof holds" in checked.output
    assert runner.invoke(cli, ["audit", "proof", "999"]).exit_code == 1


def test_forged_events_outside_any_block_are_named(sealed: Services) -> None:
    """An event appended after the last block with a right hash but no signature,
    and a chain whose blocks were all deleted, do not verify."""
    from ehr_service.storage.audit import chain_hash
    from ehr_service.storage.tables import audit_head

    keys = _keys(sealed)
    with tamper(sealed) as conn:
        last = conn.execute(sa.select(audit_event).order_by(audit_event.c.position.desc())).first()
        assert last is not None
        content = bytes(last.content).replace(f'"id":"{last.seq}"'.encode(), b'"id":"999"')
        digest = chain_hash(last.hash, last.position + 1, content)
        conn.execute(sa.insert(audit_event).values(
            seq=999, recorded=last.recorded, kind=last.kind, outcome=last.outcome,
            subject=last.subject, organization=last.organization, entity=last.entity,
            content=content, position=last.position + 1, prev_hash=last.hash, hash=digest,
        ))  # fmt: skip
        conn.execute(sa.update(audit_head).values(seq=last.position + 1, hash=digest))
    verdict = verify(sealed.unit, keys)
    assert not verdict.intact and verdict.event == 999, verdict
    with tamper(sealed) as conn:
        conn.execute(sa.delete(audit_event).where(audit_event.c.seq == 999))
        conn.execute(sa.update(audit_head).values(seq=last.position, hash=last.hash, block=0))
        conn.execute(sa.update(audit_event).values(block=None))
        conn.execute(sa.delete(audit_block))
    verdict = verify(sealed.unit, keys)
    assert not verdict.intact and "in no signed block" in verdict.reason


def test_a_tail_rolled_back_and_resealed_is_named_by_the_anchors(
    chain_services: Services,
) -> None:
    """Whoever can write the database can undo the last block and let the sealer
    sign an altered tail; the statements anchored outside the database name it,
    and the sealer refuses a head that disagrees with the last block."""
    keys = _keys(chain_services)
    anchors = chain_services.settings.effective_audit_anchors_file
    assert anchors.exists() and verify(chain_services.unit, keys, anchors).intact
    with chain_services.unit.read() as conn:
        last = conn.execute(sa.select(audit_block).order_by(audit_block.c.number.desc())).first()
    assert last is not None
    from ehr_service.storage.tables import audit_head

    with tamper(chain_services) as conn:  # the head moved back alone
        conn.execute(sa.update(audit_head).values(seq=last.first_position - 1))
    assert Sealer(chain_services.unit, keys, interval=0).seal() == 0  # refused, logged
    with tamper(chain_services) as conn:  # now the whole tail undone
        before = conn.execute(
            sa.select(audit_event.c.prev_hash).where(audit_event.c.position == last.first_position)
        ).scalar_one()
        conn.execute(sa.update(audit_event).where(audit_event.c.block == last.number)
                     .values(position=None, prev_hash=None, hash=None, block=None))  # fmt: skip
        conn.execute(sa.delete(audit_block).where(audit_block.c.number == last.number))
        conn.execute(sa.update(audit_head).values(hash=before, block=last.number - 1))
    assert Sealer(chain_services.unit, keys, interval=0).seal() > 0  # re-signed
    assert verify(chain_services.unit, keys).intact  # the database alone cannot tell
    verdict = verify(chain_services.unit, keys, anchors)
    assert not verdict.intact and f"block {last.number}" in verdict.reason


def test_events_chained_before_blocks_are_closed_into_signed_blocks(tmp_path: Path) -> None:
    """A database upgraded with events of the earlier chain: the first seal signs
    blocks over them, then chains the new ones."""
    from ehr_service.app import build_services
    from ehr_service.config import Settings
    from ehr_service.storage.audit import GENESIS, chain_hash
    from ehr_service.storage.migrate import upgrade
    from tests.conftest import MIGRATIONS

    settings = Settings(database_url=f"sqlite:///{tmp_path / 'old.sqlite3'}",
                        data_dir=tmp_path / "data", environment="test")  # fmt: skip
    services = build_services(settings)
    upgrade(services.database, MIGRATIONS, "0011")
    prev = GENESIS
    with services.database.engine.begin() as conn:  # the earlier chain: position = id
        for seq in range(1, 4):
            event = services.auditor.new_event(
                interaction="read", status=200, caller=_caller(), patients=frozenset()
            )
            content = event.content_for(seq)
            digest = chain_hash(prev, seq, content)
            conn.execute(sa.insert(audit_event).values(
                seq=seq, recorded=event.recorded, kind=event.kind, outcome=event.outcome,
                subject=event.subject, organization=event.organization, entity=event.entity,
                content=content, prev_hash=prev, hash=digest,
            ))  # fmt: skip
            prev = digest
        conn.execute(sa.text("UPDATE audit_head SET seq = 3, hash = :h"), {"h": prev})
    upgrade(services.database, MIGRATIONS)
    assert verify(services.unit).intact  # waiting for their block is not a break
    with TestClient(create_app(services=services), headers=bearer(settings)) as client:
        client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON)
    verdict = seal_and_verify(services)
    assert verdict.intact, verdict.reason
    assert verdict.events == 4 and verdict.blocks == 2 and verdict.unsealed == 0
