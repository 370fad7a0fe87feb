"""Audit retention (docs/architecture.md §9, "Retention"): older signed blocks
move out of the database into segment files that ``audit verify`` still walks.

``Archiver.archive`` takes the next run of whole blocks sealed before the cut-off
and, in this order:

1. writes their events to a segment file (``audit/segments.py``) from one
   snapshot, synced and renamed into place read-only;
2. reads the file back and walks it as ``audit verify`` would, from the chain
   hash before its first event: nothing leaves the database unless the file
   holds it whole;
3. in one transaction records the segment (the file's SHA-256 and size, signed
   with the region's key) and removes the events and their access rows; the
   database's guard lets an event go only if a segment holds it, and a second
   archiver of the same blocks fails on the segment's unique first block;
4. appends the segment's signed statement to the anchor file.

Nothing here ever deletes a segment file or a block; the blocks stay in the
database, small, so the chain's signed history is there in full.
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError

from ehr_service.audit import segments
from ehr_service.audit.chain import ChainWalk
from ehr_service.audit.sealing import BlockKeys, sign
from ehr_service.fhir import jsonio
from ehr_service.fhir.primitives import utc_now
from ehr_service.storage import audit as audit_store
from ehr_service.storage import audit_archive as archive_store
from ehr_service.storage.audit import NewEvent
from ehr_service.storage.unit_of_work import UnitOfWork

logger = logging.getLogger(__name__)

MAX_EVENTS = 100_000  # per segment file


class ArchiveError(Exception):
    """Archiving cannot go on (what is wrong; nothing was removed)."""


class Archiver:
    def __init__(
        self,
        unit: UnitOfWork,
        keys: BlockKeys,
        directory: Path,
        *,
        anchors: Path | None = None,
        max_events: int = MAX_EVENTS,
        audit: Callable[[], NewEvent] | None = None,
    ) -> None:
        self.audit = audit  # the archiving act's own event (else the unit's each_write)
        self.unit = unit
        self.keys = keys
        self.directory = directory
        self.anchors = anchors
        self.max_events = max_events

    def archive(self, older_than: timedelta) -> list[dict[str, Any]]:
        """Archive every whole block sealed more than ``older_than`` ago; the
        segments written (none: nothing is that old)."""
        cutoff = utc_now() - older_than
        written = []
        while (segment := self.archive_one(cutoff)) is not None:
            written.append(segment)
        return written

    def archive_one(self, cutoff: datetime) -> dict[str, Any] | None:
        """The next segment of blocks sealed before ``cutoff``, archived; None if none."""
        active = self.keys.active()
        if active is None:
            raise ArchiveError("this region has no active signing key to sign segments with")
        with self.unit.read(snapshot=True) as conn:
            last = archive_store.last_segment(conn)
            number = (last["number"] if last else 0) + 1
            blocks = archive_store.archivable_blocks(
                conn, last["last_block"] if last else 0, cutoff, self.max_events
            )
            if not blocks:
                return None
            legacy = audit_store.head(conn).legacy
            first, final = blocks[0]["first_position"], blocks[-1]["last_position"]
            low, high, count = archive_store.seq_bounds(conn, first, final)
            if count != final - first + 1:
                raise ArchiveError(f"events between positions {first} and {final} are missing: "
                                   "run ehr-service audit verify")  # fmt: skip
            writer = segments.SegmentWriter(
                self.directory, number, blocks[0]["number"], blocks[-1]["number"]
            )
            try:
                last_recorded = _write(conn, writer, blocks)
                digest, size = writer.finish()
            except BaseException:
                writer.abandon()
                raise
        after = str(jsonio.loads(bytes(blocks[0]["statement"]))["after"])
        try:
            _check_file(writer.path, blocks, legacy, after)
        except ArchiveError:
            writer.path.unlink(missing_ok=True)
            raise
        info, key = active
        segment: dict[str, Any] = {
            "number": number, "first_block": blocks[0]["number"],
            "last_block": blocks[-1]["number"], "first_position": first,
            "last_position": final, "first_seq": low, "last_seq": high, "events": count,
            "last_recorded": last_recorded, "file": writer.path.name, "digest": digest,
            "bytes": size, "archived": utc_now(), "kid": info.kid,
        }  # fmt: skip
        body = segments.statement(segment, after, blocks[-1]["head"])
        segment["statement"] = body
        segment["signature"] = sign(body, info.kid, info.alg, key)
        try:
            with self.unit.write(*([self.audit()] if self.audit else [])) as conn:
                removed = archive_store.record_segment(conn, segment)
                if removed != count:  # the snapshot and now disagree: leave all as it was
                    raise ArchiveError(f"{removed} events found to archive, {count} written")
        except IntegrityError:
            raise ArchiveError(f"segment {number} was archived meanwhile by another archiver; "
                               "run the archive again") from None  # fmt: skip
        self._anchor(segment)
        return segment

    def _anchor(self, segment: dict[str, Any]) -> None:
        if self.anchors is None:
            return
        line = jsonio.dumps({
            "segment": segment["number"],
            "statement": base64.b64encode(segment["statement"]).decode(),
            "signature": segment["signature"],
        })  # fmt: skip
        self.anchors.parent.mkdir(parents=True, exist_ok=True)
        with self.anchors.open("ab") as anchors:
            anchors.write(line + b"\n")

    # -- in the server: a daemon thread, once an hour --------------------------------
    def start(self, older_than: timedelta, interval: float = 3600.0) -> None:
        self._stop = threading.Event()

        def run() -> None:
            while not self._stop.wait(interval):
                try:
                    self.archive(older_than)
                except Exception:  # the next round tries again; nothing was removed
                    logger.exception("audit archiving round failed")

        threading.Thread(target=run, name="audit-archiver", daemon=True).start()

    def stop(self) -> None:
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()


def _write(conn: Any, writer: segments.SegmentWriter, blocks: list[dict[str, Any]]) -> datetime:
    """Write the blocks and their events; when the last event was recorded."""
    last_recorded: datetime | None = None
    for block in blocks:
        writer.block(block)
        events = list(audit_store.walk(
            conn, after=block["first_position"] - 1, through=block["last_position"]
        ))  # fmt: skip
        touched = audit_store.accesses(conn, min(e.seq for e in events), max(e.seq for e in events))
        for event in events:
            writer.event(event, touched.get(event.seq, ()))
            if last_recorded is None or event.recorded > last_recorded:
                last_recorded = event.recorded
    assert last_recorded is not None  # a block holds at least one event
    return last_recorded


def _check_file(path: Path, blocks: list[dict[str, Any]], legacy: int, after: str) -> None:
    """Walk the written file as ``audit verify`` will: it must hold the blocks whole."""
    first = blocks[0]
    walker = ChainWalk(None, legacy, iter(blocks),
                   start=(first["first_position"] - 1, after, first["number"] - 1))  # fmt: skip
    try:
        for item in segments.read(path):
            if isinstance(item, segments.ArchivedEvent):
                walker.event(item.event, set(item.patients))
            if walker.problem is not None:
                break
    except segments.SegmentError as exc:
        raise ArchiveError(f"the segment file does not read back: {exc}") from None
    if walker.problem is None and walker.count != blocks[-1]["last_position"]:
        walker.problem = (walker.count + 1, "the file ends early", None)
    if walker.problem is not None:
        at, reason, _ = walker.problem
        raise ArchiveError(f"the segment file does not hold the chain it should (position {at}: "
                           f"{reason}); nothing was removed")  # fmt: skip
