"""``ehr-service import``: NDJSON files, Bundles and folders of them.

NDJSON lines are resources with ids, imported in batches: new ones validated and
inserted together (Core bulk inserts, search indexes and history written as for
any create), ones already stored with the same content skipped (so a re-run of
the same input changes nothing), changed ones written as their next version.
Transaction and batch Bundles go through the normal bundle processing. A line or
entry that fails is written to the errors file and the rest goes on. Memory holds
one batch at a time whatever the input size.
"""

from __future__ import annotations

import functools
import io
import itertools
import multiprocessing
import time
from collections.abc import Callable, Iterator
from concurrent.futures import (
    ALL_COMPLETED,
    FIRST_COMPLETED,
    Future,
    ProcessPoolExecutor,
    wait,
)
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import orjson
from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from ehr_service.fhir import jsonio
from ehr_service.fhir.errors import FhirError
from ehr_service.fhir.primitives import utc_now
from ehr_service.fhir.references import is_valid_id
from ehr_service.interactions import update
from ehr_service.interactions.bundle import process_bundle
from ehr_service.interactions.context import RequestContext
from ehr_service.interactions.writing import prepare_version
from ehr_service.storage import resources
from ehr_service.storage.unit_of_work import savepoint, touch

BATCH = 500
# Resources outside any resident's record that records point to.
REFERENCED_FIRST = frozenset(
    {"Organization", "Practitioner", "PractitionerRole", "Location", "Medication", "Device",
     "Substance", "HealthcareService", "Endpoint", "CodeSystem", "ValueSet", "ConceptMap"}
)  # fmt: skip


@dataclass(slots=True)
class Progress:
    total_bytes: int
    done_bytes: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    failed: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def resources(self) -> int:
        return self.created + self.updated + self.unchanged

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = self.resources / elapsed
        share = self.done_bytes / self.total_bytes if self.total_bytes else 1.0
        eta = elapsed / share - elapsed if share > 0 else 0.0
        return (
            f"{share:6.1%}  {self.resources:,} resources ({self.created:,} new, "
            f"{self.updated:,} changed, {self.unchanged:,} unchanged, {self.failed:,} failed)  "
            f"{rate:,.0f}/s  ETA {eta:,.0f} s"
        )


def input_files(paths: list[Path]) -> list[Path]:
    """The files to read, those of resources others point to first (institutions,
    then residents, then their records: an institution written after its results
    would re-mark every one of them), otherwise in the order given."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix in {".ndjson", ".json"})
        else:
            files.append(path)
    return sorted(files, key=_rank)


def _rank(path: Path) -> int:
    """0 institutions and the like, 1 residents, 2 their consents (a refusal must be
    stored before the results it keeps from partners), 3 the rest."""
    name = path.name.split(".")[0].split("-")[0]
    if name in REFERENCED_FIRST:
        return 0
    return {"Patient": 1, "Consent": 2}.get(name, 3)


class Importer:
    """``workers`` > 1: NDJSON batches are validated and written by that many
    processes (each its own transaction), each built by ``worker_context``; files of
    a dependency rank (institutions, residents, the rest) finish before the next."""

    def __init__(
        self,
        ctx: RequestContext,
        errors: TextIO,
        on_progress: Callable[[Progress], None] | None = None,
        *,
        workers: int = 1,
        worker_context: Callable[[], RequestContext] | None = None,
    ) -> None:
        self.ctx = ctx
        self.errors = errors
        self.on_progress = on_progress
        self.workers = workers if worker_context is not None else 1
        self.worker_context = worker_context
        self._last_report = 0.0

    def run(self, paths: list[Path]) -> Progress:
        files = input_files(paths)
        progress = Progress(sum(p.stat().st_size for p in files))
        if self.workers > 1:
            self._parallel(files, progress)
        else:
            for path in files:
                if path.suffix == ".ndjson":
                    self._ndjson(path, progress)
                else:
                    self._json(path, progress)
        self._report(progress, force=True)
        return progress

    def _parallel(self, files: list[Path], progress: Progress) -> None:
        assert self.worker_context is not None
        start = functools.partial(_worker_start, self.worker_context)
        context = multiprocessing.get_context("spawn")  # no inherited engine or pool
        with ProcessPoolExecutor(self.workers, mp_context=context, initializer=start) as pool:
            for _, group in itertools.groupby(files, key=_rank):
                pending: set[Future[tuple[Progress, str]]] = set()
                for path in group:
                    if path.suffix != ".ndjson":
                        self._settle(pending, progress, wait_all=True)
                        self._json(path, progress)
                        continue
                    for batch in _raw_batches(path, progress):
                        if len(pending) >= 2 * self.workers:  # bounded: memory stays flat
                            self._settle(pending, progress)
                        pending.add(pool.submit(_worker_batch, batch))
                self._settle(pending, progress, wait_all=True)  # the next rank needs these

    def _settle(
        self,
        pending: set[Future[tuple[Progress, str]]],
        progress: Progress,
        *,
        wait_all: bool = False,
    ) -> None:
        done, _ = wait(pending, return_when=ALL_COMPLETED if wait_all else FIRST_COMPLETED)
        crashed = [f for f in done if f.exception() is not None]  # a worker process died
        for future in done:
            pending.discard(future)
            if future in crashed:
                continue
            counted, errors = future.result()
            progress.created += counted.created
            progress.updated += counted.updated
            progress.unchanged += counted.unchanged
            progress.failed += counted.failed
            self.errors.write(errors)
        self._report(progress)
        if crashed:
            raise RuntimeError(f"an import worker failed: {crashed[0].exception()}")

    def _error(self, progress: Progress, where: str, message: str) -> None:
        progress.failed += 1
        self.errors.write(f"{where}: {message}\n")

    def _report(self, progress: Progress, *, force: bool = False) -> None:
        now = time.monotonic()
        if self.on_progress and (force or now - self._last_report >= 1.0):
            self._last_report = now
            self.on_progress(progress)

    # -- NDJSON --------------------------------------------------------------------------
    def _parse(self, lines: list[tuple[str, bytes]], progress: Progress) -> list[tuple[str, Any]]:
        batch: list[tuple[str, Any]] = []
        for where, raw in lines:
            try:
                resource = jsonio.loads(raw)
            except orjson.JSONDecodeError as exc:
                self._error(progress, where, f"not JSON ({exc})")
                continue
            if not _importable(resource):
                self._error(progress, where, "a line must be a resource with a valid id")
                continue
            batch.append((where, resource))
        return batch

    def _ndjson(self, path: Path, progress: Progress) -> None:
        for lines in _raw_batches(path, progress):
            batch = self._parse(lines, progress)
            with self.ctx.services.unit.write() as conn:
                self._batch(conn, batch, progress)
            self._report(progress)

    def _batch(self, conn: Connection, batch: list[tuple[str, Any]], progress: Progress) -> None:
        keys = [(r["resourceType"], r["id"]) for _, r in batch]
        stored = _stored(conn, keys)
        protection = self.ctx.services.identity.protection
        fresh, seen = [], set()
        now = utc_now()
        for where, resource in batch:
            key = (resource["resourceType"], resource["id"])
            if key in stored or key in seen:  # stored, or twice in this batch
                current = stored.get(key)
                if current is not None and _same(
                    protection.present(current, reveal=True), resource
                ):
                    progress.unchanged += 1
                    continue
                try:
                    with savepoint(conn):
                        changed = update.update(conn, self.ctx, key[0], key[1], resource)
                    progress.updated += 1
                    touch(conn, changed.patients)
                except FhirError as error:
                    self._error(progress, where, str(error))
                continue
            seen.add(key)
            try:
                version, _ = prepare_version(
                    conn, self.ctx, resource, resource_type=key[0], resource_id=key[1],
                    version_id=1, now=now, method="PUT",
                )  # fmt: skip
            except FhirError as error:
                self._error(progress, where, str(error))
                continue
            fresh.append((where, resource, version))
        try:
            with savepoint(conn):
                resources.insert_new(conn, [v for _, _, v in fresh])
            progress.created += len(fresh)
            touch(conn, (v.compartment_patient_id for _, _, v in fresh))
        except IntegrityError:  # a concurrent writer, or an ID number held elsewhere
            for where, resource, _ in fresh:
                try:
                    with savepoint(conn):
                        update.update(
                            conn, self.ctx, resource["resourceType"], resource["id"], resource
                        )
                    progress.created += 1
                except (FhirError, IntegrityError) as error:
                    self._error(progress, where, str(error))

    # -- Bundles ---------------------------------------------------------------------------
    def _json(self, path: Path, progress: Progress) -> None:
        progress.done_bytes += path.stat().st_size
        try:
            document = jsonio.loads(path.read_bytes())
        except orjson.JSONDecodeError as exc:
            self._error(progress, path.name, f"not JSON ({exc})")
            return
        if isinstance(document, dict) and document.get("type") in {"transaction", "batch"}:
            try:
                result = process_bundle(self.ctx, document)
            except FhirError as error:
                self._error(progress, path.name, str(error))
                return
            entries = result.body.get("entry", []) if isinstance(result.body, dict) else []
            for index, entry in enumerate(entries):
                status = str(entry.get("response", {}).get("status", ""))
                if status.startswith("201"):
                    progress.created += 1
                elif status.startswith("2"):
                    progress.updated += 1
                else:
                    self._error(progress, f"{path.name}#entry[{index}]", status)
            return
        if isinstance(document, dict) and document.get("resourceType") == "Bundle":
            items = [e.get("resource") for e in document.get("entry") or () if isinstance(e, dict)]
        else:
            items = [document]
        batch = []
        for index, item in enumerate(items):
            if _importable(item):
                batch.append((f"{path.name}#{index}", item))
            else:
                self._error(progress, f"{path.name}#{index}", "not a resource with a valid id")
        with self.ctx.services.unit.write() as conn:
            self._batch(conn, batch, progress)


def _raw_batches(path: Path, progress: Progress) -> Iterator[list[tuple[str, bytes]]]:
    """The file's non-blank lines, ``BATCH`` at a time, each with where it was."""
    batch: list[tuple[str, bytes]] = []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            progress.done_bytes += len(raw)
            if raw.strip():
                batch.append((f"{path.name}:{number}", raw))
            if len(batch) >= BATCH:
                yield batch
                batch = []
    if batch:
        yield batch


# -- the worker processes of a parallel import ---------------------------------------------
_worker: list[Importer] = []


def _worker_start(make_context: Callable[[], RequestContext]) -> None:
    _worker.append(Importer(make_context(), io.StringIO()))


def _worker_batch(lines: list[tuple[str, bytes]]) -> tuple[Progress, str]:
    """One batch in its own transaction; its counts and error lines go back."""
    importer = _worker[0]
    importer.errors = io.StringIO()
    progress = Progress(0)
    batch = importer._parse(lines, progress)
    try:
        with importer.ctx.services.unit.write() as conn:
            importer._batch(conn, batch, progress)
    except (FhirError, SQLAlchemyError) as error:  # rolled back: none of the batch is stored
        progress = Progress(0, failed=len(lines))
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        return progress, "".join(f"{where}: batch not stored: {reason}\n" for where, _ in lines)
    return progress, importer.errors.getvalue()


def _stored(conn: Connection, keys: list[tuple[str, str]]) -> dict[tuple[str, str], bytes]:
    by_type: dict[str, list[str]] = {}
    for resource_type, resource_id in keys:
        by_type.setdefault(resource_type, []).append(resource_id)
    out = {}
    for resource_type, ids in by_type.items():
        for resource_id, content in resources.live_contents(conn, resource_type, ids).items():
            out[(resource_type, resource_id)] = content
    return out


def _importable(resource: Any) -> bool:
    return (
        isinstance(resource, dict)
        and isinstance(resource.get("resourceType"), str)
        and isinstance(resource.get("id"), str)
        and is_valid_id(resource["id"])
    )


def _same(stored: bytes, given: dict[str, Any]) -> bool:
    """Equal but for the server's meta (versionId, lastUpdated) and server-added tags."""
    current = jsonio.loads(stored)
    incoming = jsonio.loads(jsonio.dumps(given))
    for document in (current, incoming):
        meta = document.get("meta")
        if isinstance(meta, dict):
            rest = {k: v for k, v in meta.items() if k not in {"versionId", "lastUpdated", "tag"}}
            document["meta"] = rest
            if not rest:
                del document["meta"]
    incoming_ids = {
        i.get("system") for i in incoming.get("identifier") or () if isinstance(i, dict)
    }
    current["identifier"] = [  # the record number this service assigned
        i
        for i in current.get("identifier") or ()
        if not isinstance(i, dict) or i.get("system") in incoming_ids
    ] or None
    if current["identifier"] is None:
        del current["identifier"]
    return bool(current == incoming)
