"""Exchange signing keys: generate, rotate, retire, revoke; kid is the RFC 7638
thumbprint; the JWKS publishes what verifies, never private or revoked keys."""

from __future__ import annotations

import base64
import hashlib
import stat
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from ehr_service.app import create_app
from ehr_service.cli import app as cli
from ehr_service.interactions.context import Services


def _thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638, computed here by hand: the required members, sorted, no spaces."""
    members = ("crv", "kty", "x", "y") if jwk["kty"] == "EC" else ("crv", "kty", "x")
    canonical = orjson.dumps({m: jwk[m] for m in members}, option=orjson.OPT_SORT_KEYS)
    return base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()


def _keys(monkeypatch: pytest.MonkeyPatch, services: Services, *args: str) -> str:
    monkeypatch.setenv("EHR_DATA_DIR", str(services.settings.data_dir))
    # every key change is an audited act: the command needs the service's database
    monkeypatch.setenv("EHR_DATABASE_URL", services.settings.effective_database_url)
    result = CliRunner().invoke(cli, ["keys", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_key_lifecycle_and_jwks(services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    first = _keys(monkeypatch, services, "generate").split()
    assert first[1:] == ["ES256", "active"]
    pending = _keys(monkeypatch, services, "generate", "--alg", "Ed25519").split()
    assert pending[1:] == ["Ed25519", "pending"]
    rotated = _keys(monkeypatch, services, "rotate").split()
    assert rotated[0] == pending[0] and rotated[2] == "active"
    listed = _keys(monkeypatch, services, "list")
    assert f"{first[0]}  ES256  retired" in listed
    with TestClient(create_app(services=services), raise_server_exceptions=False) as anonymous:
        jwks = anonymous.get("/.well-known/jwks.json").json()
        assert {k["kid"] for k in jwks["keys"]} == {first[0], pending[0]}
        for key in jwks["keys"]:
            assert "d" not in key and key["kid"] == _thumbprint(key)
        _keys(monkeypatch, services, "revoke", first[0])
        jwks = anonymous.get("/.well-known/jwks.json").json()
        assert [k["kid"] for k in jwks["keys"]] == [pending[0]]
    directory: Path = services.settings.signing_keys_dir
    for path in directory.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name


def test_refused_key_operations(services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    kid = _keys(monkeypatch, services, "generate").split()[0]
    monkeypatch.setenv("EHR_DATA_DIR", str(services.settings.data_dir))
    runner = CliRunner()
    active = runner.invoke(cli, ["keys", "retire", kid])
    assert active.exit_code == 1 and "rotate" in active.output
    unknown = runner.invoke(cli, ["keys", "revoke", "no-such-kid"])
    assert unknown.exit_code == 1
    # a thumbprint may begin with "-": it is read as the kid, never as an option
    dashed = runner.invoke(cli, ["keys", "revoke", "-R4E_oZEbn5RSlwUk"])
    assert dashed.exit_code == 1 and "no signing key -R4E_oZEbn5RSlwUk" in dashed.output
    dashed = runner.invoke(cli, ["keys", "retire", "-x"])
    assert dashed.exit_code == 1 and "no signing key -x" in dashed.output
    assert runner.invoke(cli, ["keys", "generate", "--alg", "HS256"]).exit_code == 1
    assert runner.invoke(cli, ["keys", "revoke", kid]).exit_code == 0
    assert runner.invoke(cli, ["keys", "retire", kid]).exit_code == 1  # revoked for good
