"""SM2 signing keys through ``ehr-service keys`` (each suite has its own active key),
their JWKS form, and ``ehr-service partner add/update --suite``."""

from __future__ import annotations

import base64
import hashlib
import stat
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from ehr_service.app import create_app
from ehr_service.cli import app as cli
from ehr_service.exchange.partners import PartnerRegistry
from ehr_service.interactions.context import Services
from ehr_service.security.sm2 import SM2Key


def _keys(monkeypatch: pytest.MonkeyPatch, services: Services, *args: str) -> list[str]:
    monkeypatch.setenv("EHR_DATA_DIR", str(services.settings.data_dir))
    # every key change is an audited act: the command needs the service's database
    monkeypatch.setenv("EHR_DATABASE_URL", services.settings.effective_database_url)
    result = CliRunner().invoke(cli, ["keys", *args])
    assert result.exit_code == 0, result.output
    return result.output.split()


def test_sm2_key_lifecycle_beside_es256(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    es256 = _keys(monkeypatch, services, "generate")
    national = _keys(monkeypatch, services, "generate", "--alg", "SM2SM3")
    assert national[1:] == ["SM2SM3", "active"]  # its suite had no active key
    pending = _keys(monkeypatch, services, "generate", "--alg", "SM2SM3")
    assert pending[1:] == ["SM2SM3", "pending"]
    rotated = _keys(monkeypatch, services, "rotate", "--alg", "SM2SM3")
    assert rotated[0] == pending[0] and rotated[2] == "active"
    listed = " ".join(_keys(monkeypatch, services, "list"))
    assert f"{es256[0]} ES256 active" in listed  # the other suite is left alone
    assert f"{national[0]} SM2SM3 retired" in listed
    with TestClient(create_app(services=services), raise_server_exceptions=False) as anonymous:
        published = {k["kid"]: k for k in anonymous.get("/.well-known/jwks.json").json()["keys"]}
        assert set(published) == {es256[0], national[0], pending[0]}
        for kid in (national[0], pending[0]):
            jwk = published[kid]
            assert (jwk["kty"], jwk["crv"], jwk["alg"]) == ("EC", "SM2", "SM2SM3")
            assert "d" not in jwk
            canonical = orjson.dumps({m: jwk[m] for m in ("crv", "kty", "x", "y")})
            digest = hashlib.sha256(canonical).digest()
            assert kid == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()  # RFC 7638
            SM2Key.from_jwk(jwk)  # a point of the curve
        _keys(monkeypatch, services, "revoke", national[0])
        published = {k["kid"] for k in anonymous.get("/.well-known/jwks.json").json()["keys"]}
        assert published == {es256[0], pending[0]}
    runner = CliRunner()
    assert runner.invoke(cli, ["keys", "retire", pending[0]]).exit_code == 1  # active: rotate
    assert runner.invoke(cli, ["keys", "rotate", "--alg", "SM3"]).exit_code == 1
    directory: Path = services.settings.signing_keys_dir
    for path in directory.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name


def test_partner_suite_through_the_command_line(
    services: Services, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("EHR_DATA_DIR", str(services.settings.data_dir))
    monkeypatch.setenv("EHR_DATABASE_URL", services.settings.effective_database_url)
    key = SM2Key.generate()
    jwks = tmp_path / "jwks.json"
    jwks.write_bytes(orjson.dumps({"keys": [key.as_dict() | {"kid": key.thumbprint()}]}))
    runner = CliRunner()
    base = ["partner", "add", "sichuan", "--name", "Sichuan", "--region", "sichuan",
            "--audience", "sichuan", "--jwks", str(jwks), "--allow", "Observation"]  # fmt: skip
    refused = runner.invoke(cli, base)  # international by default: it has no ES256 key
    assert refused.exit_code == 1 and "ES256 or Ed25519" in refused.output
    assert runner.invoke(cli, [*base, "--suite", "classical"]).exit_code == 1
    assert PartnerRegistry(services.unit).list() == []
    added = runner.invoke(cli, [*base, "--suite", "national"])
    assert added.exit_code == 0 and "suite=national" in added.output, added.output
    assert "suite=national" in runner.invoke(cli, ["partner", "list"]).output
    both = runner.invoke(cli, ["partner", "update", "sichuan", "--suite", "both"])
    assert both.exit_code == 1 and PartnerRegistry(services.unit).get("sichuan").suite == (
        "national"
    )
    private = tmp_path / "private.json"
    private.write_bytes(orjson.dumps({"keys": [key.as_dict(private=True) | {"kid": "x"}]}))
    leaked = runner.invoke(cli, ["partner", "update", "sichuan", "--jwks", str(private)])
    assert leaked.exit_code == 1 and "public keys" in leaked.output
    bad = tmp_path / "bad.json"
    bad.write_bytes(orjson.dumps({"keys": [{**key.as_dict(), "x": "AAAA", "kid": "y"}]}))
    assert runner.invoke(cli, ["partner", "update", "sichuan", "--jwks", str(bad)]).exit_code == 1
