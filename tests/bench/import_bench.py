"""Bulk import of generated lifelong records: ``ehr-service generate`` writes N
residents as NDJSON, then ``ehr-service import`` loads them in a child process
whose wall time and peak memory (max RSS) are measured; a second import of the
same files shows the re-run cost (nothing changes). Storage bytes per resource
(tables and indexes, or the SQLite file) are read afterwards."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa


def _storage_bytes(url: str, data_dir: Path) -> int:
    if url.startswith("sqlite"):
        return sum(p.stat().st_size for p in data_dir.glob("*.sqlite3*"))
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(sa.text("SELECT pg_database_size(current_database())")).scalar_one()
            )
    finally:
        engine.dispose()


def _import(env: dict[str, str], paths: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "ehr_service.cli", "import", *paths, "--errors", os.devnull],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return time.perf_counter() - started, done.stdout.strip().splitlines()[-1]


def run(name: str, url: str | None, residents: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("EHR_")}
        env.update(EHR_DATA_DIR=str(root / "data"), EHR_STATEMENT_TIMEOUT_MS="0")
        if url:
            env["EHR_DATABASE_URL"] = url
        database_url = url or f"sqlite:///{root / 'data' / 'ehr.sqlite3'}"
        subprocess.run(
            [sys.executable, "-m", "ehr_service.cli", "migrate"],
            env=env,
            capture_output=True,
            check=True,
        )
        subprocess.run(
            [
                sys.executable,
                "-m",
                "ehr_service.cli",
                "generate",
                "--residents",
                str(residents),
                "--out",
                str(root / "gen"),
                "--no-bundles",
            ],
            env=env,
            capture_output=True,
            check=True,
        )
        files = sorted(str(p) for p in (root / "gen" / "ndjson").glob("*.ndjson"))
        total = sum(sum(1 for _ in open(f, "rb")) for f in files)  # noqa: SIM115
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        seconds, summary = _import(env, files)
        peak_mb = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
        rerun_seconds, rerun_summary = _import(env, files)
        stored = _storage_bytes(database_url, root / "data")
    return {
        "backend": name,
        "residents": residents,
        "resources": total,
        "import_resources_per_s": round(total / seconds),
        "import_seconds": round(seconds, 1),
        "import_summary": summary,
        "rerun_seconds": round(rerun_seconds, 1),
        "rerun_summary": rerun_summary,
        "peak_rss_mb": round(peak_mb),
        "storage_bytes_per_resource": round(stored / total),
    }
