"""Bulk import of generated lifelong records: ``ehr-service generate`` writes N
residents as NDJSON, then ``ehr-service import`` loads them in a child process
whose wall time and peak memory (the resident memory of the import and its
worker processes together) are measured; a second import of the
same files shows the re-run cost (nothing changes). Storage bytes per resource
(tables and indexes, or the SQLite file) are read afterwards."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import sqlalchemy as sa
from fhir.resources.R4B import get_fhir_model_class

from tests.bench import load_bench


def _storage_bytes(url: str, data_dir: Path) -> int:
    if url.startswith("sqlite"):
        return sum(p.stat().st_size for p in data_dir.glob("*.sqlite3*"))
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            size = int(
                conn.execute(sa.text("SELECT pg_database_size(current_database())")).scalar_one()
            )
            if conn.execute(sa.text("SELECT to_regclass('citus_tables') IS NOT NULL")).scalar():
                # the shards are on the workers: their sizes, beside the coordinator's own
                size += int(
                    conn.execute(
                        sa.text(
                            "SELECT coalesce(sum(citus_total_relation_size(table_name)), 0) "
                            "FROM citus_tables"
                        )
                    ).scalar_one()
                )
            return size
    finally:
        engine.dispose()


def _tree_rss(pid: int) -> int:
    """Resident memory (bytes) of a process and all its descendants (Linux /proc)."""
    total = 0
    for current in load_bench.process_tree(pid):
        try:
            status = Path(f"/proc/{current}/status").read_text()
        except OSError:
            continue
        total += next(
            (int(line.split()[1]) * 1024 for line in status.splitlines()
             if line.startswith("VmRSS")),
            0,
        )  # fmt: skip
    return total


def _import(env: dict[str, str], paths: list[str]) -> tuple[float, str, int]:
    """Wall time, summary line and peak memory of the import with its workers."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "ehr_service.cli", "import", *paths, "--errors", os.devnull],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    peak = 0
    while process.poll() is None:
        peak = max(peak, _tree_rss(process.pid))
        time.sleep(0.25)
    seconds = time.perf_counter() - started
    assert process.stdout is not None
    output = process.stdout.read().strip().splitlines()
    if process.returncode != 0:
        raise RuntimeError(f"import failed: {output[-1:]}")
    return seconds, output[-1], peak


def validation_rate(files: list[str], limit: int = 20_000) -> float:
    """Resources/s of fhir.resources validation alone of the same resources."""
    resources = []
    for name in files:
        with open(name, "rb") as handle:
            resources += [
                orjson.loads(line)
                for _, line in zip(range(limit // len(files)), handle, strict=False)
            ]
    models = [get_fhir_model_class(r["resourceType"]) for r in resources]
    started = time.perf_counter()
    for model, resource in zip(models, resources, strict=True):
        model.model_validate(resource)
    return len(resources) / (time.perf_counter() - started)


def everything_of_largest(database_url: str, data_dir: Path, count: int = 50) -> dict[str, Any]:
    """Page through ``$everything`` of the resident with the most resources: every
    resource of the record once, none twice; the time of each page."""
    from ehr_service.app import build_services
    from ehr_service.config import Settings
    from ehr_service.interactions import everything
    from ehr_service.interactions.context import RequestContext
    from ehr_service.security.caller import SERVICE
    from ehr_service.storage.tables import resource

    services = build_services(Settings(database_url=database_url, data_dir=data_dir))
    try:
        owner = resource.c.compartment_patient_id
        with services.unit.read() as conn:
            pid = conn.execute(
                sa.select(owner)
                .where(owner.is_not(None), resource.c.deleted.is_(False))
                .group_by(owner)
                .order_by(sa.func.count().desc())
                .limit(1)
            ).scalar_one()
            expected = {
                (r.res_type, r.res_id)
                for r in conn.execute(
                    sa.select(resource.c.res_type, resource.c.res_id).where(
                        owner == pid, resource.c.deleted.is_(False)
                    )
                )
            }
        seen: list[tuple[str, str]] = []
        timings: list[float] = []
        query: dict[str, list[str]] | None = {"_count": [str(count)]}
        while query is not None:
            ctx = RequestContext(services, "http://bench/fhir", caller=SERVICE, query=query)
            started = time.perf_counter()
            with services.unit.read() as conn:
                body = orjson.loads(orjson.dumps(everything.everything(conn, ctx, pid).body))
            timings.append((time.perf_counter() - started) * 1000)
            seen += [
                (e["resource"]["resourceType"], e["resource"]["id"])
                for e in body.get("entry") or ()
                if e["search"]["mode"] == "match"
            ]
            after = next((lnk["url"] for lnk in body["link"] if lnk["relation"] == "next"), None)
            query = parse_qs(urlsplit(after).query) if after else None
    finally:
        services.database.dispose()
    ordered = sorted(timings)
    return {
        "largest_record_resources": len(expected),
        "everything_pages": len(timings),
        "everything_page_size": count,
        "everything_page_p50_ms": round(ordered[len(ordered) // 2], 2),
        "everything_page_max_ms": round(ordered[-1], 2),
        "everything_complete": set(seen) >= expected,
        "everything_duplicates": len(seen) - len(set(seen)),
    }


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
        valid_rate = validation_rate(files)
        seconds, summary, peak = _import(env, files)
        rerun_seconds, rerun_summary, _ = _import(env, files)
        stored = _storage_bytes(database_url, root / "data")
        largest = everything_of_largest(database_url, root / "data")
    return {
        "backend": name,
        "residents": residents,
        "resources": total,
        "workers": (os.cpu_count() or 1) if url else 1,  # the import's default
        "import_resources_per_s": round(total / seconds),
        "validation_only_resources_per_s": round(valid_rate),
        "import_seconds": round(seconds, 1),
        "import_summary": summary,
        "rerun_seconds": round(rerun_seconds, 1),
        "rerun_summary": rerun_summary,
        "peak_rss_mb": round(peak / 2**20),  # the import and its workers together
        "storage_bytes_per_resource": round(stored / total),
        **largest,
    }
