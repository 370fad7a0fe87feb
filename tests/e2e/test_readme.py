"""The README's shell examples marked ``<!-- tested -->`` run, in order, against a
live server (demo data, its own data directory and port), and every command must
succeed (``curl -f``: an HTTP error fails the example)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ehr_service.config import PROJECT_ROOT
from tests.e2e.test_two_regions import Server, _free_port

BLOCK = re.compile(r"<!-- tested -->\s*```sh\n(.*?)```", re.DOTALL)


def test_readme_examples(tmp_path: Path) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    blocks = BLOCK.findall((PROJECT_ROOT / "README.md").read_text())
    assert len(blocks) >= 4, "the README lost its tested examples"
    server = Server("chongqing", _free_port(), tmp_path / "data")
    server.extra_env = {"EHR_DEMO_DATA": "true"}
    try:
        server.start()
        script = "set -euo pipefail\n" + "\n".join(blocks)
        env = server.env | {
            "BASE": server.url,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        }
        bin_dir = tmp_path / "repo"
        (bin_dir / ".venv" / "bin").mkdir(parents=True)
        # The examples call .venv/bin/ehr-service: the one of this interpreter.
        launcher = bin_dir / ".venv" / "bin" / "ehr-service"
        launcher.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m ehr_service.cli "$@"\n')
        launcher.chmod(0o755)
        done = subprocess.run(
            ["bash", "-c", script],
            cwd=bin_dir,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, (
            f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
        )
        out = done.stdout
        assert "川渝HR" in out  # the result was marked on write
        assert "'valueBoolean': True" in out  # and is recognisable
        assert "needs at least 1" in out  # $validate listed what the profile misses
        assert "$export-file" in out and "audit chain intact" in out
    finally:
        server.stop()
