"""Archived audit segments: the file format (docs/architecture.md §9, "Retention").

A segment holds a run of whole signed blocks, in order, as gzip-compressed JSON
lines: for each block a ``block`` line (its columns and signed statement, so a
file can be checked with the published keys alone), then an ``event`` line per
event it sealed (the event's columns, whose records it touched, and its stored
bytes). The segment's record in the database (``audit_segment``) keeps the file's
SHA-256, size and a signed statement of what it holds; the statement is also
appended to the anchor file.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import os
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from ehr_service.fhir import jsonio
from ehr_service.fhir.primitives import format_instant
from ehr_service.storage.audit import StoredEvent

SEGMENT_TYPE = "ehr-audit-segment"


class SegmentError(Exception):
    """A segment file that cannot be read as one (names what is wrong)."""


@dataclass(frozen=True, slots=True)
class ArchivedEvent:
    event: StoredEvent
    patients: frozenset[str]


def file_name(number: int, first_block: int, last_block: int) -> str:
    """Named by what it holds: two archivers of the same blocks write the same bytes."""
    return f"segment-{number:08d}-blocks-{first_block}-{last_block}.jsonl.gz"


def _event_line(event: StoredEvent, patients: Iterable[str]) -> bytes:
    return jsonio.dumps({"event": {
        "seq": event.seq, "position": event.position, "block": event.block,
        "recorded": format_instant(event.recorded), "kind": event.kind,
        "outcome": event.outcome, "subject": event.subject,
        "organization": event.organization, "entity": event.entity,
        "prev_hash": event.prev_hash, "hash": event.hash, "patients": sorted(patients),
        "content": base64.b64encode(event.content).decode(),
    }})  # fmt: skip


def _block_line(block: dict[str, Any]) -> bytes:
    return jsonio.dumps({"block": {
        "number": block["number"], "first_position": block["first_position"],
        "last_position": block["last_position"], "root": block["root"],
        "head": block["head"], "sealed": format_instant(block["sealed"]),
        "kid": block["kid"], "statement": base64.b64encode(bytes(block["statement"])).decode(),
        "signature": block["signature"],
    }})  # fmt: skip


class SegmentWriter:
    """Writes one segment file: to a temporary name, flushed to disk, then renamed
    into place read-only, so a file under its final name is always whole."""

    def __init__(self, directory: Path, number: int, first_block: int, last_block: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / file_name(number, first_block, last_block)
        self._partial = directory / f".{self.path.name}.{secrets.token_hex(6)}.partial"
        self._raw: BinaryIO = self._partial.open("wb")
        self._gzip = gzip.GzipFile(filename="", fileobj=self._raw, mode="wb", mtime=0)

    def block(self, block: dict[str, Any]) -> None:
        self._gzip.write(_block_line(block) + b"\n")

    def event(self, event: StoredEvent, patients: Iterable[str]) -> None:
        self._gzip.write(_event_line(event, patients) + b"\n")

    def finish(self) -> tuple[str, int]:
        """Close, sync and publish the file; its SHA-256 and size."""
        self._gzip.close()
        self._raw.flush()
        os.fsync(self._raw.fileno())
        self._raw.close()
        self._partial.chmod(0o444)
        os.replace(self._partial, self.path)
        _sync_directory(self.path.parent)
        return digest_of(self.path)

    def abandon(self) -> None:
        self._gzip.close()
        self._raw.close()
        self._partial.unlink(missing_ok=True)


def _sync_directory(directory: Path) -> None:
    try:
        handle = os.open(directory, os.O_RDONLY)
    except OSError:  # some platforms cannot open a directory: the rename stands
        return
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def digest_of(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def read(path: Path) -> Iterator[dict[str, Any] | ArchivedEvent]:
    """The blocks (as their column dicts) and events of a segment file, in order."""
    try:
        with gzip.open(path, "rb") as lines:
            for number, line in enumerate(lines, start=1):
                yield _parse(line, number)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise SegmentError(f"{path.name} cannot be read: {exc}") from None


def _parse(line: bytes, number: int) -> dict[str, Any] | ArchivedEvent:
    try:
        record = jsonio.loads(line)
        if "block" in record:
            block = dict(record["block"])
            block["statement"] = base64.b64decode(block["statement"], validate=True)
            return block
        raw = record["event"]
        event = StoredEvent(
            seq=int(raw["seq"]), recorded=datetime.fromisoformat(raw["recorded"]),
            kind=str(raw["kind"]), outcome=str(raw["outcome"]), subject=str(raw["subject"]),
            organization=raw["organization"], content=base64.b64decode(raw["content"],
                                                                        validate=True),
            prev_hash=raw["prev_hash"], hash=raw["hash"], entity=raw["entity"],
            position=int(raw["position"]), block=int(raw["block"]),
        )  # fmt: skip
        return ArchivedEvent(event, frozenset(str(p) for p in raw["patients"]))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise SegmentError(f"line {number} is neither a block nor an event") from None


def statement(segment: dict[str, Any], after: str, head: str) -> bytes:
    """What a segment's signature covers: the blocks and positions it holds, the
    chain hashes around it, and the file's digest and size."""
    return jsonio.dumps(
        {
            "type": SEGMENT_TYPE,
            "segment": segment["number"],
            "first_block": segment["first_block"],
            "last_block": segment["last_block"],
            "first": segment["first_position"],
            "last": segment["last_position"],
            "events": segment["events"],
            "after": after,  # the chain hash before ``first``
            "head": head,  # the chain hash at ``last``
            "file": segment["file"],
            "digest": segment["digest"],
            "bytes": segment["bytes"],
            "archived": format_instant(segment["archived"]),
        }
    )
