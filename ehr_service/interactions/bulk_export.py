"""FHIR Bulk Data export (Bulk Data Access IG v2: ``$export`` at system, Patient and
Group level).

Kick-off (``Prefer: respond-async``; GET with URL parameters, or POST with a
``Parameters`` body) is checked whole (``bulk_request``: ``_type``, ``_since``,
``_typeFilter`` as FHIR searches, ``_elements``, ``patient``; what is not offered is
a 400, or under ``Prefer: handling=lenient`` ignored and reported in the manifest's
``error`` file), then records a job and answers 202 with the status URL in
``Content-Location``; a worker thread writes one NDJSON file per type under
``<data dir>/exports/<job>/``, each file sealed at rest in chunks with the data key
(``security/sealed_files.py``; inside, the stored form: resident ID numbers sealed
again on their own); the status URL answers 202 with ``X-Progress``
while it runs, then 200 with the manifest; files are served to the client that
asked, with ID numbers opened only for callers allowed to see them; ``DELETE`` on
the status URL cancels the job and removes its files. Resources are exported as
they were at the kick-off (``transactionTime``: one changed or deleted since as
its version then, one created since not at all), never the records of residents
who refused the caller.
"""

from __future__ import annotations

import errno
import logging
import shutil
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from ehr_service.fhir import jsonio
from ehr_service.fhir.errors import Category, FhirError, operation_outcome
from ehr_service.fhir.export_parameters import prefer_of
from ehr_service.fhir.primitives import format_instant, new_id, utc_now
from ehr_service.fhir.search.shaping import subset
from ehr_service.interactions import bulk_request
from ehr_service.interactions.bulk_request import ExportPlan
from ehr_service.interactions.context import RequestContext, Services
from ehr_service.interactions.results import Result
from ehr_service.security import sealed_files
from ehr_service.security.caller import Caller
from ehr_service.security.fieldcrypto import Keyring
from ehr_service.security.policy import forbidden
from ehr_service.security.sealed_files import SealedWriter
from ehr_service.storage import bulk_export as store

logger = logging.getLogger(__name__)
NDJSON = "application/fhir+ndjson"
PAGE = 1000
DRIVEN_AT_MOST = 20 * PAGE  # filtered types: pages driven by the match set up to this many
ERRORS = "errors.ndjson"  # what lenient handling ignored (no resource type is so named)


@dataclass(frozen=True, slots=True)
class Job:
    job_id: str
    kind: str
    plan: ExportPlan  # types, _since, patients, _typeFilter, _elements, what was ignored
    until: datetime
    refused_actors: tuple[str, ...]

    @property
    def types(self) -> tuple[str, ...]:
        return self.plan.types


def _client(caller: Caller) -> str:
    return caller.client_id or caller.subject


def _reason(exc: Exception, directory: Path) -> str:
    """Why a job failed, in words an operator can act on (no path, no content)."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        free = shutil.disk_usage(directory).free // (1024 * 1024) if directory.exists() else 0
        return f"the data directory's disk is full ({free} MB free); free space and ask again"
    if isinstance(exc, OSError):
        return f"the export files could not be written ({exc.strerror or type(exc).__name__})"
    if isinstance(exc, FhirError):
        return exc.issues[0].diagnostics if exc.issues else exc.category.value
    return type(exc).__name__


def _sealed_name(job_id: str, name: str) -> str:
    """What a bulk file's chunks are sealed for: this job's file of this name."""
    return f"bulk-export/{job_id}/{name}"


def _not_found(job_id: str) -> FhirError:
    return FhirError.of(Category.NOT_FOUND, f"No export job {job_id[:64]} for this client")


class BulkExports:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.directory = services.settings.data_dir / "exports"
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bulk-export")
        self._cancelled: set[str] = set()
        self._stopping = False  # the service is shutting down: jobs stop between pages
        self._lock = threading.Lock()

    @property
    def _keyring(self) -> Keyring:
        return self.services.identity.protection.keyring

    # -- kick-off ---------------------------------------------------------------------
    def kickoff(
        self,
        ctx: RequestContext,
        kind: str,
        group_id: str | None,
        prefer: str | None,
        request_url: str,
    ) -> str:
        """Check the whole request (``ctx.query``: the URL's parameters, or those of a
        POST's Parameters body), record the job and start it."""
        if ctx.caller.patient is not None:
            raise forbidden("Bulk export is for staff and system clients, not patient tokens")
        if ctx.view.permit_actors:  # consent-required: another region asks per resident
            raise forbidden(
                "Bulk export is not offered to another region's callers: this service "
                "shares across regions only the records of residents who consented"
            )
        preference = prefer_of(prefer)
        if not preference.respond_async:
            raise FhirError.of(
                Category.INCORRECT,
                "$export needs the header Prefer: respond-async",
                code="required",
            )
        plan = bulk_request.plan(ctx, kind, group_id, preference.lenient)
        job_id = new_id()
        now = utc_now()
        with self.services.unit.write() as conn:
            store.add_job(
                conn,
                {
                    "job_id": job_id,
                    "client": _client(ctx.caller),
                    "kind": kind,
                    "group_id": group_id,
                    "types": jsonio.dumps(plan.types).decode(),
                    "since": plan.since,
                    "request": request_url[:2048],
                    "state": "queued",
                    "created": now,
                    "transaction_time": now,
                },
            )
            self.services.auditor.record(conn, ctx, Result(202, patients=plan.named))
        job = Job(job_id, kind, plan, now, ctx.view.refused_actors)
        self.expire()
        self.executor.submit(self._run, job)
        return job_id

    # -- the worker -----------------------------------------------------------------------
    def _run(self, job: Job) -> None:
        folder = self.directory / job.job_id
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            output = self._write_ignored(job, folder)
            for index, resource_type in enumerate(job.types):
                if self._is_cancelled(job.job_id):
                    break
                with self.services.unit.write() as conn:
                    store.set_job(
                        conn,
                        job.job_id,
                        state="running",
                        progress=f"{resource_type} ({index + 1} of {len(job.types)})",
                    )
                path = folder / f"{resource_type}.ndjson"
                count, complete = self._write_type(job, resource_type, path)
                if not complete:
                    break
                if count:
                    output.append(
                        {"type": resource_type, "file": f"{resource_type}.ndjson", "count": count}
                    )
            else:  # every type written to its last page: only then is the job done
                with self.services.unit.write() as conn:
                    store.set_job(
                        conn,
                        job.job_id,
                        state="done",
                        progress="done",
                        finished=utc_now(),
                        output=jsonio.dumps(output),
                    )
                return
            if not self._stopping:
                return  # cancelled: the job and its files are gone already
            self._fail(job.job_id, "the service stopped while exporting; ask again")
        except Exception as exc:  # the job fails; the service goes on
            logger.exception("export job %s failed", job.job_id)
            self._fail(job.job_id, _reason(exc, self.directory))

    def _fail(self, job_id: str, reason: str) -> None:
        """A failed job keeps no partial file (a client could take it for the whole)."""
        shutil.rmtree(self.directory / job_id, ignore_errors=True)
        with self.services.unit.write() as conn:
            store.set_job(conn, job_id, state="failed", finished=utc_now(), error=reason[:2000])

    def _write_type(self, job: Job, resource_type: str, path: Path) -> tuple[int, bool]:
        """(resources written, whether the last page was reached)."""
        count = 0
        after: str | None = None
        complete = False
        matching = self._matching(job, resource_type)
        kept = job.plan.elements.get(resource_type)
        with path.open("wb") as raw:
            out = SealedWriter(raw, self._keyring, _sealed_name(job.job_id, path.name))
            while not self._is_cancelled(job.job_id):
                with self.services.unit.read() as conn:
                    rows = store.page(
                        conn,
                        resource_type,
                        after=after,
                        limit=PAGE,
                        since=job.plan.since,
                        until=job.until,
                        patients=job.plan.patients,
                        compartment_only=job.kind != "system",
                        refused_actors=job.refused_actors,
                        matching=matching,
                    )
                for _resource_id, content in rows:
                    if kept is not None:  # _elements: the listed and the mandatory ones
                        content = jsonio.dumps(subset(jsonio.loads(content), None, kept))
                    out.write(content)
                    out.write(b"\n")
                count += len(rows)
                if len(rows) < PAGE:
                    complete = True
                    break
                after = rows[-1][0]
            out.close()
        if count == 0:
            path.unlink(missing_ok=True)
        return count, complete

    def _matching(self, job: Job, resource_type: str) -> tuple[Any, ...]:
        """The type's filters as its pages should apply them. Driven by an id set,
        each page builds the set again: cheap for few matches, quadratic in them
        for many. Checked per resource, the pages walk the type once. So: the id
        set while fewer than ``DRIVEN_AT_MOST`` resources match, else per resource."""
        matching = job.plan.filters.get(resource_type, ())
        if not matching:
            return ()
        with self.services.unit.read() as conn:
            many = store.matches_at_least(conn, resource_type, matching, DRIVEN_AT_MOST)
        return job.plan.scans.get(resource_type, matching) if many else matching

    def _write_ignored(self, job: Job, folder: Path) -> list[dict[str, Any]]:
        """What lenient handling ignored, as OperationOutcomes in the error file."""
        if not job.plan.ignored:
            return []
        with (folder / ERRORS).open("wb") as raw:
            out = SealedWriter(raw, self._keyring, _sealed_name(job.job_id, ERRORS))
            for issue in job.plan.ignored:
                out.write(jsonio.dumps(operation_outcome(Category.INCORRECT, [issue])) + b"\n")
            out.close()
        return [{"type": "OperationOutcome", "file": ERRORS, "count": len(job.plan.ignored),
                 "error": True}]  # fmt: skip

    def _is_cancelled(self, job_id: str) -> bool:
        with self._lock:
            return self._stopping or job_id in self._cancelled

    # -- status, files, cancel -------------------------------------------------------------
    def _job(self, ctx: RequestContext, job_id: str) -> dict[str, Any]:
        with self.services.unit.read() as conn:
            job = store.get_job(conn, job_id)
        if job is None or job["client"] != _client(ctx.caller) or job["state"] == "cancelled":
            raise _not_found(job_id)
        return job

    def status(
        self, ctx: RequestContext, job_id: str, base_url: str
    ) -> tuple[int, dict[str, str], Any]:
        job = self._job(ctx, job_id)
        if job["state"] in {"queued", "running"}:
            headers = {"X-Progress": job["progress"] or job["state"], "Retry-After": "2"}
            return 202, headers, None
        if job["state"] == "failed":
            raise FhirError.of(
                Category.FAULT, f"The export failed ({job['error']})", code="exception"
            )
        files = jsonio.loads(job["output"] or b"[]")

        def items(errors: bool) -> list[dict[str, Any]]:
            return [
                {
                    "type": f["type"],
                    "url": f"{base_url}/$export-file/{job_id}/{f['file']}",
                    "count": f["count"],
                }
                for f in files
                if bool(f.get("error")) == errors
            ]

        manifest = {
            "transactionTime": format_instant(job["transaction_time"]),
            "request": job["request"],
            "requiresAccessToken": True,
            "output": items(errors=False),
            "error": items(errors=True),
        }
        return 200, {}, manifest

    def file(self, ctx: RequestContext, job_id: str, name: str) -> Iterator[bytes]:
        job = self._job(ctx, job_id)
        files = {f["file"] for f in jsonio.loads(job["output"] or b"[]")}
        if job["state"] != "done" or name not in files:
            raise _not_found(f"{job_id}/{name}")
        path = self.directory / job_id / name
        protection = self.services.identity.protection
        reveal = ctx.caller.sees_id_numbers

        def lines() -> Iterator[bytes]:
            with path.open("rb") as handle:
                for line in sealed_files.lines(handle, protection.keyring,
                                               _sealed_name(job_id, name)):  # fmt: skip
                    yield protection.present(line, reveal=reveal) + b"\n"

        return lines()

    def cancel(self, ctx: RequestContext, job_id: str) -> None:
        self._job(ctx, job_id)
        with self._lock:
            self._cancelled.add(job_id)
        with self.services.unit.write() as conn:
            store.cancel_job(conn, job_id)
            self.services.auditor.record(conn, ctx, Result(202))
        shutil.rmtree(self.directory / job_id, ignore_errors=True)

    def recover(self) -> None:
        """At start: jobs a stopped process left unfinished have failed (their partial
        files removed), and expired exports are deleted."""
        with self.services.unit.read() as conn:
            stale = store.stale_jobs(conn)
        for job_id in stale:
            self._fail(job_id, "the service stopped while exporting; ask again")
        self.expire()

    def expire(self) -> int:
        """Delete jobs finished more than ``EHR_EXPORT_RETENTION_HOURS`` ago, files and
        all (their status URL then answers 404). Run at start and at each kick-off."""
        hours = self.services.settings.export_retention_hours
        if hours <= 0:
            return 0
        before = utc_now() - timedelta(hours=hours)
        with self.services.unit.write() as conn:
            expired = store.finished_before(conn, before)
            for job_id in expired:
                store.remove_job(conn, job_id)
        for job_id in expired:
            shutil.rmtree(self.directory / job_id, ignore_errors=True)
        return len(expired)

    def shutdown(self) -> None:
        """Stop: a running job ends after its current page and is marked failed, its
        files removed (never done with fewer resources: the client asks again);
        queued ones are dropped and failed at the next start."""
        with self._lock:
            self._stopping = True
        self.executor.shutdown(wait=True, cancel_futures=True)
