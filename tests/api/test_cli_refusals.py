"""The command line refuses nonsense before it stores or signs anything: a region
the service does not know, a quality-control period that ends before it starts,
scopes that grant nothing; and ``token mint`` carries every claim the verifier
reads (patient, org, region, purpose of use, client id), each shown at work
against the app."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from joserfc.jwk import ECKey
from typer.testing import CliRunner

from ehr_service.app import create_app
from ehr_service.cli import app as cli
from ehr_service.interactions.context import Services
from tests.helpers import FHIR_JSON, audit_get, organization, patient, refusal, snapshot

Run = Callable[..., tuple[int, str]]


@pytest.fixture
def run(services: Services, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Run:
    """The command against the test database and data directory (its token key)."""
    monkeypatch.setenv("EHR_DATABASE_URL", database_url)
    monkeypatch.setenv("EHR_DATA_DIR", str(services.settings.data_dir))
    monkeypatch.setenv("EHR_ENVIRONMENT", "test")

    def invoke(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(cli, list(args))
        return result.exit_code, result.output

    return invoke


def _as(services: Services, token: str) -> TestClient:
    return TestClient(
        create_app(services=services),
        raise_server_exceptions=False,
        headers={"Authorization": f"Bearer {token.strip()}"},
    )


def _mint(run: Run, *args: str) -> str:
    code, out = run("token", "mint", *args)
    assert code == 0, out
    return out.strip().splitlines()[-1]


def _add_partner(run: Run, tmp_path: Path, region: str) -> None:
    key = ECKey.generate_key("P-256", private=True, auto_kid=True)
    jwks = tmp_path / "partner.json"
    jwks.write_bytes(orjson.dumps({"keys": [key.as_dict(private=False)]}))
    code, out = run("partner", "add", "sichuan-hub", "--name", "四川平台", "--region", region,
                    "--audience", "chongqing", "--jwks", str(jwks),
                    "--allow", "Observation")  # fmt: skip
    assert code == 0, out


def test_an_unknown_region_is_refused_and_stores_nothing(
    run: Run, services: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = snapshot(services)
    code, out = run("institution", "add", "h9", "--name", "火星医院", "--region", "mars")
    assert code == 2, out
    assert "unknown region 'mars'" in out and "chongqing, sichuan" in out
    assert snapshot(services) == before
    assert run("institution", "show", "h9")[0] == 1  # not created
    for region in ("chongqing", "sichuan"):  # EHR_REGION and the zone (EHR_REGIONS)
        code, out = run("institution", "add", f"h-{region}", "--name", "医院", "--region", region)
        assert code == 0, out
    # a partner's region is known once the partner is registered
    assert run("institution", "add", "h9", "--name", "西藏", "--region", "xizang")[0] == 2
    _add_partner(run, tmp_path, region="xizang")
    code, out = run("institution", "add", "h9", "--name", "西藏", "--region", "xizang")
    assert code == 0, out
    assert "region=xizang" in run("institution", "show", "h9")[1]
    # the zone is configured
    monkeypatch.setenv("EHR_REGIONS", '["chongqing", "guizhou"]')
    assert run("institution", "add", "h7", "--name", "贵州", "--region", "guizhou")[0] == 0
    assert run("institution", "add", "h7", "--name", "四川", "--region", "sichuan")[0] == 2


def test_a_quality_control_period_must_not_end_before_it_starts(
    run: Run, services: Services, client: TestClient
) -> None:
    org = organization("h1")
    assert client.put("/fhir/Organization/h1", json=org, headers=FHIR_JSON).status_code == 201
    before = snapshot(services)
    qc = ("institution", "qc", "h1", "--category", "lab-chemistry", "--scheme", "NCCL EQA",
          "--cycle", "2026-1")  # fmt: skip
    code, out = run(*qc, "--from", "2026-06-30", "--to", "2026-01-01")
    assert code == 2, out
    assert "ends (--to 2026-01-01) before it starts (--from 2026-06-30)" in out
    assert snapshot(services) == before
    # a one-day period is a period; the basic ISO form is stored as FHIR's extended one
    code, out = run(*qc, "--from", "20260701", "--to", "20260701")
    assert code == 0, out
    shown = run("institution", "show", "h1")[1]
    assert "2026-07-01 .. 2026-07-01" in shown


@pytest.mark.parametrize(
    ("scopes", "named"),
    [
        ("mars/*.x", "mars/*.x"),
        ("system/*.cruds openid", "openid"),
        ("system/Observation.sr", "system/Observation.sr"),  # letters out of order
        ("system/Nonsense.rs", "system/Nonsense.rs"),
        ("patient/Observation.rs?category=laboratory", "?category=laboratory"),
        ("ehr/superuser", "ehr/superuser"),
        (" ", "(none given)"),
    ],
)
def test_scopes_that_grant_nothing_are_refused(run: Run, scopes: str, named: str) -> None:
    code, out = run("token", "mint", "--scope", scopes, "--patient", "p1")
    assert code == 2, out
    assert "scopes this service does not know" in out and named in out
    assert "eyJ" not in out  # no token printed


def test_claims_the_verifier_would_refuse_or_ignore_are_refused(run: Run) -> None:
    cases: dict[str, tuple[str, ...]] = {
        "patient/ scopes need --patient": ("--scope", "patient/*.rs"),
        "--patient binds patient/ scopes only": ("--scope", "user/*.rs", "--patient", "p1"),
        "is not a v3 ActReason code": ("--scope", "user/*.rs", "--purpose", "治疗"),
        "--org is over 255 characters": ("--scope", "user/*.rs", "--org", "x" * 256),
        "--client-id is empty": ("--scope", "user/*.rs", "--client-id", ""),
        "unknown region 'mars'": ("--scope", "user/*.rs", "--region", "mars"),
    }
    for message, args in cases.items():
        code, out = run("token", "mint", *args)
        assert code == 2 and message in out, (message, out)
    assert run("token", "mint", "--scope", "user/*.rs", "--purpose", "etreat")[0] == 0
    # the audit administrator reads the trail and nothing else (ehr/audit is its old name)
    code, out = run("token", "mint", "--scope", "user/*.rs ehr/audit", "--purpose", "etreat")
    assert code == 2 and "audit administrator" in out, out


def test_a_patient_token_sees_its_record_only(
    run: Run, services: Services, client: TestClient
) -> None:
    mine = client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON).json()["id"]
    other = client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON).json()["id"]
    token = _mint(run, "--scope", "patient/*.rs", "--patient", mine)
    with _as(services, token) as citizen:
        assert citizen.get(f"/fhir/Patient/{mine}").status_code == 200
        assert citizen.get(f"/fhir/Patient/{other}").status_code == 404
        assert citizen.get("/citizen/v1/me/access-log").status_code == 200


def test_region_and_org_claims_meet_the_residents_refusals(
    run: Run, services: Services, client: TestClient
) -> None:
    pid = client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON).json()["id"]
    for consent in (refusal(pid, region="sichuan"), refusal(pid, organization="Organization/c7")):
        assert client.post("/fhir/Consent", json=consent, headers=FHIR_JSON).status_code == 201
    plain = _mint(run, "--scope", "user/*.rs")
    from_sichuan = _mint(run, "--scope", "user/*.rs", "--region", "sichuan")
    from_clinic = _mint(run, "--scope", "user/*.rs", "--org", "Organization/c7")
    for token, status in ((plain, 200), (from_sichuan, 403), (from_clinic, 403)):
        with _as(services, token) as caller:
            assert caller.get(f"/fhir/Patient/{pid}").status_code == status


def test_purpose_client_and_subject_reach_the_audit_trail(
    run: Run, services: Services, client: TestClient
) -> None:
    pid = client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON).json()["id"]
    token = _mint(run, "--scope", "user/*.rs", "--purpose", "ETREAT", "--client-id", "his-app",
                  "--sub", "dr-li", "--org", "Organization/h1")  # fmt: skip
    with _as(services, token) as doctor:
        assert doctor.get(f"/fhir/Patient/{pid}").status_code == 200
    events = audit_get(client, f"/fhir/AuditEvent?entity=Patient/{pid}&subtype=read").json()
    agents: list[dict[str, Any]] = [
        agent
        for entry in events.get("entry", [])
        for agent in entry["resource"]["agent"]
        if agent.get("requestor")
    ]
    assert agents, events
    agent = agents[0]
    assert agent["who"]["identifier"]["value"] == "dr-li"
    assert agent["altId"] == "his-app"
    assert agent["purposeOfUse"][0]["coding"][0]["code"] == "ETREAT"


def test_refusals_are_one_line_and_exit_2_through_the_entry_point(tmp_path: Path) -> None:
    env = {**os.environ, "EHR_DATA_DIR": str(tmp_path / "data"), "EHR_LOG_LEVEL": "WARNING",
           "EHR_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.sqlite3'}"}  # fmt: skip

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ehr_service.cli", *args], env=env,
                              capture_output=True, text=True, timeout=120, check=False)  # fmt: skip

    assert run("migrate").returncode == 0
    cases = {
        "region": ("institution", "add", "x", "--name", "X", "--region", "mars"),
        "period": ("institution", "qc", "x", "--category", "lab-chemistry", "--scheme", "S",
                   "--cycle", "1", "--from", "2026-02-01", "--to", "2026-01-31"),
        "scope": ("token", "mint", "--scope", "system/*.everything"),
    }  # fmt: skip
    for case, args in cases.items():
        done = run(*args)
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert done.returncode == 2 and len(lines) == 1, (case, done.stderr)
        assert done.stdout == "" and "Traceback" not in done.stderr, case
