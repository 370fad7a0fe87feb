"""Three administrators (GB/T 22239-2019 level 3): system, security and audit
administration are separate scopes, no token holds two of them, the audit
administrator reads and verifies the trail and nothing else, and every
administrative act, over HTTP or at the command line, is on the trail the audit
administrator reads."""

from __future__ import annotations

import time
from typing import Any

import pytest
from fastapi.testclient import TestClient
from joserfc import jwt
from typer.testing import CliRunner

from ehr_service.app import create_app
from ehr_service.cli import app as cli
from ehr_service.interactions.context import Services
from ehr_service.security.tokens import TokenClaims, mint, own_key
from tests.helpers import FHIR_JSON, audit_get, bearer, patient, seal_and_verify, snapshot

ROLE_SYSTEM = "urn:ehr-service:admin-role"


def _as(services: Services, headers: dict[str, str]) -> TestClient:
    return TestClient(create_app(services=services), raise_server_exceptions=False,
                      headers=headers)  # fmt: skip


def _hand_signed(services: Services, scope: str) -> dict[str, str]:
    """A token minting would refuse, signed directly with the trusted key."""
    key = own_key(services.settings)
    now = int(time.time())
    claims = {"iss": services.settings.own_token_issuer, "aud": services.settings.token_audience,
              "sub": "two-hats", "iat": now, "exp": now + 300, "scope": scope}  # fmt: skip
    token = jwt.encode({"alg": "ES256", "kid": key.kid}, claims, key)
    return {"Authorization": f"Bearer {token}"}


def _events(client: TestClient, query: str) -> list[dict[str, Any]]:
    bundle = audit_get(client, f"/fhir/AuditEvent?{query}&_count=100").json()
    return [e["resource"] for e in bundle.get("entry", [])]


def _roles(event: dict[str, Any]) -> list[str]:
    return [c["code"] for r in event["agent"][0]["role"] for c in r.get("coding", [])
            if c.get("system") == ROLE_SYSTEM]  # fmt: skip


def test_each_administrator_does_its_own_duty_only(client: TestClient, services: Services) -> None:
    pid = client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON).json()["id"]
    sysadmin = bearer(services.settings, "system/*.cruds ehr/sysadmin")
    legacy = bearer(services.settings, "system/*.cruds ehr/admin")
    secadmin = bearer(services.settings, "system/*.cruds ehr/secadmin")
    auditadmin = bearer(services.settings, "ehr/auditadmin")
    legacy_audit = bearer(services.settings, "ehr/audit")
    with _as(services, sysadmin) as c:
        assert c.get("/fhir/Patient/$everything").status_code == 200
        refused = c.get("/fhir/AuditEvent")
        assert refused.status_code == 403
        assert "ehr/auditadmin" in refused.json()["issue"][0]["diagnostics"]
    with _as(services, legacy) as c:  # the old all-powerful scope: system administration only
        assert c.get("/fhir/Patient/$everything").status_code == 200
        assert c.get("/fhir/AuditEvent").status_code == 403
    with _as(services, secadmin) as c:  # clinical rights, yet no system administration
        assert c.get(f"/fhir/Patient/{pid}").status_code == 200
        assert c.get("/fhir/Patient/$everything").status_code == 403
        assert c.get("/fhir/AuditEvent").status_code == 403
    for headers in (auditadmin, legacy_audit):
        with _as(services, headers) as c:
            assert c.get("/fhir/AuditEvent").status_code == 200
            assert c.get(f"/fhir/Patient/{pid}").status_code == 403  # no clinical data
            assert c.get("/fhir/Observation").status_code == 403
            assert c.get("/fhir/Patient/$everything").status_code == 403
            written = c.post("/fhir/Patient", json=patient(), headers=FHIR_JSON)
            assert written.status_code == 403


@pytest.mark.parametrize(
    "scope",
    ["ehr/sysadmin ehr/secadmin", "ehr/admin ehr/auditadmin", "ehr/secadmin ehr/audit",
     "system/*.cruds ehr/sysadmin ehr/secadmin ehr/auditadmin", "ehr/auditadmin user/*.rs",
     "ehr/audit system/Patient.r"],
)  # fmt: skip
def test_a_token_with_two_duties_is_refused(
    client: TestClient, services: Services, scope: str
) -> None:
    client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON)
    with pytest.raises(ValueError, match="administrator"):
        mint(services.settings, TokenClaims(subject="x", scopes=scope))
    before = snapshot(services)
    with _as(services, _hand_signed(services, scope)) as c:
        for answer in (c.get("/fhir/Patient"), c.get("/fhir/AuditEvent"),
                       c.post("/fhir/Patient", json=patient(), headers=FHIR_JSON)):  # fmt: skip
            assert answer.status_code == 403, answer.text
            outcome = answer.json()
            assert outcome["resourceType"] == "OperationOutcome"
            assert outcome["issue"][0]["code"] == "forbidden"
            assert "administrator" in outcome["issue"][0]["diagnostics"]
    assert snapshot(services) == before  # nothing stored, not even the POST
    refused = [e for e in _events(client, "type=110114&outcome=4")
               if e["outcomeDesc"] == "403"]  # fmt: skip
    assert refused, "the refused token is on the audit trail"


def test_http_administrative_acts_are_audited_with_the_role(
    client: TestClient, services: Services
) -> None:
    with _as(services, bearer(services.settings, "system/*.cruds ehr/sysadmin")) as c:
        assert c.get("/fhir/Patient/$everything").status_code == 200
    events = _events(client, "subtype=operation")
    assert any(_roles(e) == ["sysadmin"] for e in events)
    audit_get(client, "/fhir/AuditEvent?_count=1")  # the auditor's own reads are acts too
    reads = _events(client, "subtype=search-type")
    assert any(_roles(e) == ["auditadmin"] for e in reads)


@pytest.fixture
def run(services: Services, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("EHR_DATABASE_URL", database_url)
    monkeypatch.setenv("EHR_DATA_DIR", str(services.settings.data_dir))
    monkeypatch.setenv("EHR_ENVIRONMENT", "test")

    def invoke(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(cli, list(args))
        return result.exit_code, result.output

    return invoke


def test_token_mint_refuses_two_duties_and_is_audited(
    run: Any, client: TestClient, services: Services
) -> None:
    for scope in ("ehr/sysadmin ehr/secadmin", "ehr/auditadmin system/*.rs"):
        code, out = run("token", "mint", "--scope", scope)
        assert code == 2 and "refused" in out, out
    assert _events(client, "subtype=token-mint") == []  # a refused mint is no act
    code, out = run("token", "mint", "--scope", "system/*.cruds ehr/admin", "--sub", "his-ops")
    assert code == 0 and "ehr/admin is deprecated" in out
    token = out.strip().splitlines()[-1]
    with _as(services, {"Authorization": f"Bearer {token}"}) as c:
        assert c.get("/fhir/Patient/$everything").status_code == 200
    code, out = run("token", "mint", "--scope", "ehr/auditadmin", "--sub", "auditor-wu")
    assert code == 0 and "deprecated" not in out
    minted = _events(client, "subtype=token-mint")
    assert len(minted) == 2
    assert all(_roles(e) == ["secadmin"] and e["type"]["code"] == "110100" for e in minted)
    queries = [e["entity"][-1]["query"] for e in minted]
    assert len(set(queries)) == 2  # who got which rights is recorded (base64 query)


def test_key_and_audit_commands_are_acts_the_auditor_sees(
    run: Any, client: TestClient, services: Services
) -> None:
    code, out = run("keys", "generate")
    assert code == 0, out
    kid = out.split()[0]
    generated = _events(client, "subtype=keys-generate")
    assert len(generated) == 1 and _roles(generated[0]) == ["secadmin"]
    assert generated[0]["action"] == "C"
    code, out = run("audit", "seal")
    assert code == 0, out
    sealed = _events(client, "subtype=audit-seal")
    assert len(sealed) == 1 and _roles(sealed[0]) == ["auditadmin"]
    assert kid  # the key the event names exists
    assert seal_and_verify(services).intact


def test_an_act_that_cannot_be_audited_is_refused(
    services: Services, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setenv("EHR_DATABASE_URL", f"sqlite:///{tmp_path / 'not-migrated.sqlite3'}")
    monkeypatch.setenv("EHR_DATA_DIR", str(services.settings.data_dir))
    monkeypatch.setenv("EHR_ENVIRONMENT", "test")
    result = CliRunner().invoke(cli, ["token", "mint", "--scope", "system/*.rs"])
    assert result.exit_code == 2
    assert "audit trail" in result.output
    assert "eyJ" not in result.output  # no token handed out unaudited
