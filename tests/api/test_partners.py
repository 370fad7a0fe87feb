"""The exchange partner registry: add, list, update (keys refreshed and pinned), remove."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from joserfc.jwk import ECKey
from typer.testing import CliRunner

from ehr_service.cli import app as cli
from ehr_service.interactions.context import Services


def _jwks(path: Path, *keys: ECKey) -> str:
    path.write_bytes(orjson.dumps({"keys": [k.as_dict(private=False) for k in keys]}))
    return str(path)


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["partner", *args])
    return result.exit_code, result.output


def test_partner_registry(
    services: Services, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EHR_DATABASE_URL", database_url)
    monkeypatch.setenv("EHR_DATA_DIR", str(services.settings.data_dir))
    first = ECKey.generate_key("P-256", private=True, auto_kid=True)
    jwks = _jwks(tmp_path / "sc.json", first)
    code, out = _run(
        "add", "sichuan-hub", "--name", "四川全民健康信息平台", "--region", "sichuan",
        "--audience", "chongqing", "--jwks", jwks, "--allow", "Observation",
        "--allow", "DiagnosticReport", "--endpoint", "https://hub.sc.example/exchange/v1/bundles",
    )  # fmt: skip
    assert code == 0, out
    assert f"keys={first.kid}:active" in out and "types=DiagnosticReport,Observation" in out
    assert _run("add", "sichuan-hub", "--name", "x", "--region", "r", "--audience", "a",
                "--jwks", jwks, "--allow", "Observation")[0] == 1  # fmt: skip
    assert _run("add", "Bad Id", "--name", "x", "--region", "r", "--audience", "a",
                "--jwks", jwks, "--allow", "Observation")[0] == 1  # fmt: skip
    assert _run("add", "other", "--name", "x", "--region", "r", "--audience", "a",
                "--jwks", jwks, "--allow", "NotAType")[0] == 1  # fmt: skip
    private = tmp_path / "private.json"
    private.write_bytes(orjson.dumps({"keys": [first.as_dict(private=True)]}))
    assert _run("add", "leaky", "--name", "x", "--region", "r", "--audience", "a",
                "--jwks", str(private), "--allow", "Observation")[0] == 1  # fmt: skip

    # a rotation adds a key; the known key stays pinned
    second = ECKey.generate_key("P-256", private=True, auto_kid=True)
    code, out = _run("update", "sichuan-hub", "--jwks", _jwks(tmp_path / "sc2.json", second))
    assert code == 0 and first.kid in out and second.kid in out
    # the same kid with other key material is a substitution: refused
    impostor = ECKey.generate_key("P-256", private=True)
    forged = impostor.as_dict(private=False) | {"kid": first.kid}
    (tmp_path / "forged.json").write_bytes(orjson.dumps({"keys": [forged]}))
    code, out = _run("update", "sichuan-hub", "--jwks", str(tmp_path / "forged.json"))
    assert code == 1 and "pinned" in out
    assert first.kid in _run("list")[1]
    assert _run("remove", "sichuan-hub") == (0, "removed sichuan-hub\n")
    assert _run("remove", "sichuan-hub")[0] == 1
    assert _run("list")[1] == ""
