"""Audit retention: older signed blocks move to segment files that ``audit verify``
still walks; a missing or altered file is named; the database refuses to delete
or change what no segment holds; proofs of archived events still hold; archiving
while twenty clients write loses nothing."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from ehr_service.audit import proofs
from ehr_service.audit.archive import ArchiveError, Archiver
from ehr_service.audit.chain import Verdict, verify
from ehr_service.audit.sealing import Sealer
from ehr_service.cli import app as cli
from ehr_service.exchange.keys import SigningKeys
from ehr_service.fhir.primitives import utc_now
from ehr_service.interactions.context import Services
from ehr_service.storage import audit_guard
from ehr_service.storage.tables import (
    audit_access,
    audit_block,
    audit_event,
    audit_head,
    audit_segment,
)
from tests.api.test_write_path import fresh_services, race  # noqa: F401 - a fixture
from tests.helpers import FHIR_JSON, patient, seal_all, tamper


def _keys(services: Services) -> SigningKeys:
    keys = SigningKeys(services.settings.signing_keys_dir)
    keys.ensure_active()
    return keys


def _archiver(services: Services, **options: Any) -> Archiver:
    settings = services.settings
    return Archiver(services.unit, _keys(services), settings.effective_audit_archive_dir,
                    anchors=settings.effective_audit_anchors_file, **options)  # fmt: skip


def _verify(services: Services) -> Verdict:
    settings = services.settings
    return verify(services.unit, _keys(services), settings.effective_audit_anchors_file,
                  settings.effective_audit_archive_dir)  # fmt: skip


def _write_and_seal(services: Services, creates: int) -> list[str]:
    answers = asyncio.run(race(services, [
        {"method": "POST", "url": "/fhir/Patient", "json": patient(), "headers": FHIR_JSON}
        for _ in range(creates)
    ]))  # fmt: skip
    assert all(a.status_code == 201 for a in answers), [a.text for a in answers]
    sealer = Sealer(services.unit, _keys(services), interval=0,
                    anchors=services.settings.effective_audit_anchors_file)  # fmt: skip
    seal_all(sealer)
    return [a.json()["id"] for a in answers]


def _online(services: Services) -> int:
    with services.unit.read() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(audit_event)).scalar_one())


@pytest.fixture
def archived(fresh_services: Services) -> Services:  # noqa: F811
    """Three blocks of events, the first two archived (blocks of at most 8 events)."""
    services = fresh_services
    for _ in range(3):
        _write_and_seal(services, 8)
    with services.unit.read() as conn:
        second = conn.execute(sa.select(audit_block.c.sealed).where(audit_block.c.number == 2))
        cutoff = second.scalar_one() + timedelta(microseconds=1)
    archiver = _archiver(services, max_events=8)
    assert archiver.archive_one(cutoff) is not None and archiver.archive_one(cutoff) is not None
    assert archiver.archive_one(cutoff) is None  # the third block is younger
    return services


def test_archived_segments_are_walked_by_verify(archived: Services) -> None:
    verdict = _verify(archived)
    assert verdict.intact, verdict.reason
    assert (verdict.events, verdict.blocks, verdict.archived) == (24, 3, 16)
    assert _online(archived) == 8  # only the third block's events stay in the database
    files = sorted(archived.settings.effective_audit_archive_dir.glob("segment-*.jsonl.gz"))
    assert [f.name for f in files] == ["segment-00000001-blocks-1-1.jsonl.gz",
                                       "segment-00000002-blocks-2-2.jsonl.gz"]  # fmt: skip
    assert all(f.stat().st_mode & 0o222 == 0 for f in files)  # written read-only
    _write_and_seal(archived, 3)  # the chain goes on after the archive
    verdict = _verify(archived)
    assert verdict.intact and verdict.events == 27, verdict.reason
    with archived.unit.read() as conn:  # whose records: the access rows went with them
        kept = {r.seq for r in conn.execute(sa.select(audit_access.c.seq))}
        online = {r.seq for r in conn.execute(sa.select(audit_event.c.seq))}
    assert kept <= online


def test_a_missing_or_altered_segment_file_is_named(archived: Services) -> None:
    path = next(archived.settings.effective_audit_archive_dir.glob("segment-00000002-*"))
    content = path.read_bytes()
    path.chmod(0o644)
    path.write_bytes(content[:-8] + b"\0" * 8)
    verdict = _verify(archived)
    assert verdict.first_bad == 9 and "segment 2" in verdict.reason and "altered" in verdict.reason
    path.unlink()
    verdict = _verify(archived)
    assert verdict.first_bad == 9 and "missing" in verdict.reason
    path.write_bytes(content)
    assert _verify(archived).intact


def test_an_altered_segment_record_or_a_lost_one_is_named(archived: Services) -> None:
    with tamper(archived) as conn:
        conn.execute(sa.update(audit_segment).where(audit_segment.c.number == 1)
                     .values(events=7))  # fmt: skip
    verdict = _verify(archived)
    assert verdict.first_bad == 1 and "segment 1" in verdict.reason
    with tamper(archived) as conn:
        conn.execute(sa.update(audit_segment).where(audit_segment.c.number == 1)
                     .values(events=8))  # fmt: skip
        conn.execute(sa.delete(audit_segment).where(audit_segment.c.number == 2))
    verdict = _verify(archived)  # the chain now jumps from position 8 to 17
    assert not verdict.intact and verdict.first_bad == 9, verdict.reason


def test_the_database_refuses_to_delete_or_change_the_trail(archived: Services) -> None:
    with archived.unit.read() as conn:
        assert audit_guard.installed(conn)
        before = _snapshot(conn)
    attempts = [
        sa.delete(audit_event),  # the online events: no segment holds them
        sa.update(audit_event).values(subject="nobody"),  # sealed: never changed
        sa.delete(audit_access),
        sa.update(audit_access).values(patient_id="else"),
        sa.delete(audit_block).where(audit_block.c.number == 1),  # archived blocks stay
        sa.update(audit_block).values(root="0" * 64),
        sa.delete(audit_segment),
        sa.update(audit_segment).values(digest="0" * 64),
        sa.update(audit_head).values(seq=1),  # the head never goes back
    ]
    if archived.database.is_postgresql:
        attempts.append(sa.text("TRUNCATE audit_event"))
    for statement in attempts:
        refused = pytest.raises(sa.exc.DBAPIError, match="append-only")
        with refused, archived.unit.write(audited=False) as conn:
            conn.execute(statement)
    with archived.unit.read() as conn:
        assert _snapshot(conn) == before
    assert _verify(archived).intact and _verify(archived).guarded
    with archived.unit.write(audited=False) as conn:  # a schema owner drops it: verify says so
        audit_guard.drop(conn)
    assert not _verify(archived).guarded
    settings = archived.settings
    env = {"EHR_DATABASE_URL": settings.effective_database_url,
           "EHR_DATA_DIR": str(settings.data_dir)}  # fmt: skip
    warned = CliRunner().invoke(cli, ["audit", "verify"], env=env)
    assert warned.exit_code == 0 and "audit guard" in warned.output, warned.output
    assert CliRunner().invoke(cli, ["audit", "guard"], env=env).exit_code == 0
    assert _verify(archived).guarded


def _snapshot(conn: sa.Connection) -> dict[str, list[Any]]:
    return {
        table.name: sorted(tuple(map(str, row)) for row in conn.execute(sa.select(table)))
        for table in (audit_event, audit_access, audit_block, audit_segment, audit_head)
    }


def test_an_archived_event_keeps_its_inclusion_proof(archived: Services) -> None:
    archive = archived.settings.effective_audit_archive_dir
    with archived.unit.read() as conn:
        online = {r.seq for r in conn.execute(sa.select(audit_event.c.seq))}
        gone = min(set(range(1, 25)) - online)
        assert proofs.inclusion_proof(conn, gone) is None  # not in the database any more
        proof = proofs.inclusion_proof(conn, gone, archive)
    assert proof is not None
    assert proofs.check(proof, _keys(archived).jwks()) == ""
    path = next(archive.glob("segment-00000001-*"))
    path.chmod(0o644)
    path.write_bytes(path.read_bytes() + b"\0")
    with archived.unit.read() as conn:  # never made from an altered file
        assert proofs.inclusion_proof(conn, gone, archive) is None


def test_archiving_while_twenty_clients_write_loses_nothing(
    fresh_services: Services,  # noqa: F811
) -> None:
    services = fresh_services
    _write_and_seal(services, 20)
    sealer = Sealer(services.unit, _keys(services), interval=0.02,
                    anchors=services.settings.effective_audit_anchors_file)  # fmt: skip
    archiver = _archiver(services, max_events=5)
    done, failures = threading.Event(), []

    def archive() -> None:
        while not done.is_set():
            try:
                archiver.archive_one(utc_now())
            except ArchiveError as exc:  # a round that met the sealer: the next one goes on
                failures.append(str(exc))

    worker = threading.Thread(target=archive)
    sealer.start()
    worker.start()
    try:
        for _ in range(3):
            ids = _write_and_seal(services, 20)
            assert len(set(ids)) == 20
    finally:
        done.set()
        worker.join(30)
        sealer.stop()
    seal_all(sealer)
    while archiver.archive_one(utc_now()) is not None:
        pass
    verdict = _verify(services)
    assert verdict.intact, verdict.reason
    assert verdict.events == 80 and verdict.archived == 80 and verdict.unsealed == 0
    assert _online(services) == 0
    assert not failures, failures


def test_two_archivers_of_the_same_blocks_archive_them_once(
    fresh_services: Services,  # noqa: F811
) -> None:
    services = fresh_services
    _write_and_seal(services, 6)
    first, second = _archiver(services), _archiver(services)
    results: list[object] = []
    barrier = threading.Barrier(2)

    def run(archiver: Archiver) -> None:
        barrier.wait()
        try:
            results.append(archiver.archive_one(utc_now()))
        except ArchiveError as exc:
            results.append(exc)

    threads = [threading.Thread(target=run, args=(a,)) for a in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    segments = [r for r in results if isinstance(r, dict)]
    assert len(segments) == 1 and len(results) == 2, results
    verdict = _verify(services)
    assert verdict.intact and verdict.archived == 6, verdict.reason


def test_the_archive_command(fresh_services: Services, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    services = fresh_services
    _write_and_seal(services, 4)
    settings = services.settings
    monkeypatch.setenv("EHR_DATABASE_URL", settings.effective_database_url)
    monkeypatch.setenv("EHR_DATA_DIR", str(settings.data_dir))
    refused = CliRunner().invoke(cli, ["audit", "archive"])
    assert refused.exit_code == 2 and "--older-than-days" in refused.output
    young = CliRunner().invoke(cli, ["audit", "archive", "--older-than-days", "30"])
    assert young.exit_code == 0 and "archived 0 events in 0 segments" in young.output
    done = CliRunner().invoke(cli, ["audit", "archive", "--older-than-days", "0"])
    assert done.exit_code == 0 and "archived 4 events in 1 segments" in done.output, done.output
    checked = CliRunner().invoke(cli, ["audit", "verify"])
    assert checked.exit_code == 0, checked.output
    assert "intact: 5 events" in checked.output and "4 of them in archived" in checked.output
    with services.unit.read() as conn:  # the acts of archiving and verifying are on the chain
        kinds = [r.kind for r in conn.execute(sa.select(audit_event.c.kind)
                                                .order_by(audit_event.c.seq))]  # fmt: skip
    assert kinds == ["cli-audit-archive", "cli-audit-verify"]


def test_anchored_segments_are_checked_against_the_database(archived: Services) -> None:
    anchors: Path = archived.settings.effective_audit_anchors_file
    lines = anchors.read_bytes().splitlines()
    assert sum(b'"segment"' in line for line in lines) == 2
    with tamper(archived) as conn:  # a segment forged in the database with its own statement
        conn.execute(sa.update(audit_segment).where(audit_segment.c.number == 2)
                     .values(statement=b"{}"))  # fmt: skip
    verdict = _verify(archived)
    assert not verdict.intact and "segment 2" in verdict.reason


def test_an_event_of_a_long_named_interaction_is_stored_and_verifies(
    fresh_services: Services,  # noqa: F811
) -> None:
    """The kind column once held 32 characters: a longer operation name failed the
    insert on PostgreSQL (and with it the request)."""
    from ehr_service.security.caller import Caller
    from ehr_service.storage import audit as audit_store

    caller = Caller(subject="clerk", authenticated=True)
    names = ["cli:" + "keys-rotate-data-key-" * 3, "operation-" + "x" * 300]
    with fresh_services.unit.write(audited=False) as conn:
        audit_store.append(conn, [
            fresh_services.auditor.new_event(interaction=name, status=200, caller=caller,
                                             patients=frozenset())
            for name in names
        ])  # fmt: skip
    with fresh_services.unit.read() as conn:
        kinds = [r.kind for r in conn.execute(sa.select(audit_event.c.kind))]
    assert sorted(len(k) for k in kinds) == [67, 128]
    seal_all(Sealer(fresh_services.unit, _keys(fresh_services), interval=0))
    assert _verify(fresh_services).intact
