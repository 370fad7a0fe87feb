"""Audit size and retention figures (``make bench``, section ``audit``): the bytes
one event takes in the database (table, access rows and indexes) and in an
archived segment file, and the rates of sealing, archiving and verifying, for a
realistic mix of requests (a third creates, a third reads, a third searches)."""

from __future__ import annotations

import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

AUDIT_TABLES = ("audit_event", "audit_access", "audit_block", "audit_head")


def _online_bytes(conn: sa.Connection) -> int | None:
    """The audit tables' size with their indexes (None: this SQLite lacks dbstat)."""
    if conn.dialect.name == "postgresql":
        return sum(
            int(conn.execute(sa.text("SELECT pg_total_relation_size(:t)"), {"t": t}).scalar_one())
            for t in AUDIT_TABLES
        )
    try:
        rows = conn.execute(sa.text("SELECT name, tbl_name FROM sqlite_master")).all()
        owned = [r.name for r in rows if r.tbl_name in AUDIT_TABLES]
        sizes = conn.execute(sa.text("SELECT name, sum(pgsize) FROM dbstat GROUP BY name")).all()
    except sa.exc.OperationalError:
        return None
    return sum(int(size) for name, size in sizes if name in owned)


def run(name: str, url: str, requests: int = 3000) -> dict[str, Any]:
    from ehr_service.app import build_services, create_app
    from ehr_service.audit.archive import Archiver
    from ehr_service.audit.chain import verify
    from ehr_service.audit.sealing import Sealer
    from ehr_service.config import Settings
    from ehr_service.exchange.keys import SigningKeys
    from ehr_service.storage.migrate import upgrade
    from tests.helpers import FHIR_JSON, bearer, patient

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(database_url=url, data_dir=Path(tmp), environment="test",
                            audit_seal_seconds=0)  # fmt: skip
        services = build_services(settings)
        upgrade(services.database, settings.migrations_dir)
        try:
            with TestClient(create_app(services=services), headers=bearer(settings)) as client:
                ids: list[str] = []
                for n in range(requests):
                    if n % 3 == 0 or not ids:
                        made = client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON)
                        ids.append(made.json()["id"])
                    elif n % 3 == 1:
                        client.get(f"/fhir/Patient/{ids[n % len(ids)]}")
                    else:
                        client.get(f"/fhir/Patient?_id={ids[n % len(ids)]}&_count=10")
            keys = SigningKeys(settings.signing_keys_dir)
            keys.ensure_active()
            started = time.perf_counter()
            sealed = Sealer(services.unit, keys, interval=0).seal()
            seal_seconds = time.perf_counter() - started
            with services.unit.read() as conn:
                online = _online_bytes(conn)
                content = conn.execute(sa.text(
                    "SELECT count(*), sum(length(content)) FROM audit_event"
                )).one()  # fmt: skip
            events, content_bytes = int(content[0]), int(content[1])
            archiver = Archiver(services.unit, keys, settings.effective_audit_archive_dir)
            started = time.perf_counter()
            written = archiver.archive(timedelta(0))
            archive_seconds = time.perf_counter() - started
            archived = sum(s["events"] for s in written)
            archive_bytes = sum(s["bytes"] for s in written)
            started = time.perf_counter()
            verdict = verify(services.unit, keys, None, settings.effective_audit_archive_dir)
            verify_seconds = time.perf_counter() - started
            assert verdict.intact, verdict.reason
        finally:
            services.database.dispose()
    return {
        "backend": name,
        "events": events,
        "json_bytes_per_event": round(content_bytes / events),
        "online_bytes_per_event": round(online / events) if online else None,
        "archived_bytes_per_event": round(archive_bytes / archived) if archived else None,
        "seal_events_per_s": round(sealed / seal_seconds),
        "archive_events_per_s": round(archived / archive_seconds) if archived else None,
        "verify_events_per_s": round(verdict.events / verify_seconds),
    }
