"""The command line as an operator meets it: one log format for every line
(JSON lines by default, migration lines included), EHR_LOG_LEVEL for the
service's own loggers, no carriage-return frames in a redirected log, and a bad
setting as one line instead of a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ehr_service.mpi.redaction import uvicorn_log_config


def _run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        "EHR_DATA_DIR": str(tmp_path / "data"),
        "EHR_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.sqlite3'}",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "ehr_service.cli", *args],
        env=environment, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_migration_lines_are_json_lines_like_every_other(tmp_path: Path) -> None:
    done = _run(tmp_path, "migrate", EHR_LOG_FORMAT="json", EHR_LOG_LEVEL="INFO")
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert any(r["logger"].startswith("alembic") for r in records), lines[:3]
    quiet = _run(tmp_path / "again", "migrate", EHR_LOG_FORMAT="json", EHR_LOG_LEVEL="WARNING")
    assert quiet.returncode == 0 and quiet.stderr.strip() == ""


def test_the_log_level_reaches_the_services_own_loggers() -> None:
    for json_lines in (True, False):
        config = uvicorn_log_config(json_lines=json_lines, level="DEBUG")
        assert config["loggers"]["ehr_service"]["level"] == "DEBUG"
        assert config["loggers"]["alembic"]["level"] == "DEBUG"


def test_a_redirected_import_log_has_no_carriage_returns(tmp_path: Path) -> None:
    generated = _run(tmp_path, "generate", "--residents", "2", "--out", str(tmp_path / "gen"),
                     "--no-bundles")  # fmt: skip
    assert generated.returncode == 0, generated.stderr
    assert _run(tmp_path, "migrate").returncode == 0
    imported = _run(tmp_path, "import", str(tmp_path / "gen" / "ndjson"), "--errors",
                    str(tmp_path / "errors.txt"))  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    assert "\r" not in imported.stderr and "\r" not in imported.stdout
    assert "new" in imported.stdout


def test_a_bad_setting_is_one_line_and_exit_2(tmp_path: Path) -> None:
    done = _run(tmp_path, "serve", EHR_PORT="not-a-port")
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "EHR_PORT" in lines[0], done.stderr
    assert "Traceback" not in done.stderr


def test_refused_inputs_are_one_line_and_exit_2(tmp_path: Path) -> None:
    assert _run(tmp_path, "migrate").returncode == 0
    out = str(tmp_path / "out")
    cases = {
        "missing file": ("load", str(tmp_path / "nope.json")),
        "bad instant": ("export", "--out", out, "--since", "yesterday"),
        "a file as the folder": ("export", "--out", str(tmp_path / "cli.sqlite3")),
        "port out of range": ("serve", "--port", "99999"),
        "no workers": ("import", "--workers", "0", out),
    }
    for case, args in cases.items():
        done = _run(tmp_path, *args, EHR_LOG_LEVEL="WARNING")
        assert done.returncode == 2, (case, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr, case
        assert len(done.stderr.strip().splitlines()) <= 6, (case, done.stderr)
