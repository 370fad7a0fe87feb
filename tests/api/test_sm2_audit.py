"""A region of the national suite only seals its audit blocks with its SM2 key: the
chain verifies with the region's keys, an inclusion proof holds against its
published JWKS, and a forged block signature is named (SQLite: its own chain)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from ehr_service.app import create_app
from ehr_service.audit import proofs
from ehr_service.audit.chain import verify
from ehr_service.audit.sealing import Sealer
from ehr_service.exchange.keys import SigningKeys
from ehr_service.interactions.context import Services
from ehr_service.storage.tables import audit_block, audit_event
from tests.helpers import FHIR_JSON, bearer, patient, seal_all, tamper


def test_national_blocks_are_signed_with_sm2(make_services: Callable[..., Services]) -> None:
    services = make_services(crypto_suite="national")
    if services.database.is_postgresql:
        pytest.skip("the signatures of a chain are checked on its own SQLite database")
    app = create_app(services=services)
    with TestClient(app, raise_server_exceptions=False, headers=bearer(services.settings)) as c:
        for _ in range(2):
            assert c.post("/fhir/Patient", json=patient(), headers=FHIR_JSON).status_code == 201
    keys = SigningKeys(services.settings.signing_keys_dir)
    assert [info.alg for info in keys.list()] == ["SM2SM3"]  # no ES256 key was made
    seal_all(Sealer(services.unit, keys, interval=0))
    verdict = verify(services.unit, keys)
    assert verdict.intact and verdict.blocks >= 1 and verdict.unsealed == 0, verdict
    with services.unit.read() as conn:
        block = conn.execute(sa.select(audit_block).order_by(audit_block.c.number)).first()
        seq = conn.execute(sa.select(sa.func.max(audit_event.c.seq))).scalar_one()
    assert block is not None and block.signature.count(".") == 2
    with TestClient(app, headers=bearer(services.settings, "ehr/audit")) as auditor:
        proof = auditor.get(f"/fhir/AuditEvent/{seq}/$inclusion-proof").json()
        jwks = auditor.get("/.well-known/jwks.json").json()
    assert proofs.check(proof, jwks) == ""
    header, _, signature = block.signature.split(".")
    forged = f"{header}..{signature[:-4]}{'AAAA' if signature[-4:] != 'AAAA' else 'BBBB'}"
    with tamper(services) as conn:  # past the audit guard, as a schema owner could
        conn.execute(
            sa.update(audit_block)
            .where(audit_block.c.number == block.number)
            .values(signature=forged)
        )
    verdict = verify(services.unit, keys)
    assert not verdict.intact and "signature" in verdict.reason
