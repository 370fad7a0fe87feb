"""FHIR Bulk Data export routes (``$export`` at system, Patient and Group level, by
GET or by POST of a ``Parameters`` body; the status URL and the files). Registered
before the generic FHIR routes."""

from __future__ import annotations

from dataclasses import replace
from urllib.parse import urlencode

from fastapi import APIRouter, Path, Request
from fastapi.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse

from ehr_service.api import openapi_docs as docs
from ehr_service.api.deps import Context
from ehr_service.api.handling import JSON_BODY, ResourceId, json_body
from ehr_service.fhir import jsonio
from ehr_service.fhir.export_parameters import body_query, merged
from ehr_service.interactions.bulk_export import NDJSON, BulkExports
from ehr_service.interactions.context import RequestContext
from ehr_service.interactions.results import Result
from ehr_service.interactions.routing import check_id

router = APIRouter(prefix="/fhir", tags=["Bulk Data"])
JobId = Path(description="export job id", pattern=r"^[A-Za-z0-9\-]{1,64}$")
FileName = Path(description="file of the manifest", pattern=r"^[A-Za-z]{1,64}\.ndjson$")


def _bulk(request: Request) -> BulkExports:
    bulk: BulkExports = request.app.state.bulk
    return bulk


async def _kickoff(request: Request, ctx: RequestContext, kind: str, group: str | None) -> Response:
    bulk = _bulk(request)
    prefer = ", ".join(request.headers.getlist("prefer")) or None
    job_id = await run_in_threadpool(bulk.kickoff, ctx, kind, group, prefer, str(request.url))
    return Response(
        status_code=202, headers={"Content-Location": f"{ctx.base_url}/$export-status/{job_id}"}
    )


@router.get("/$export", **docs.export_route("export everything (async kick-off)", kickoff=True))
async def export_system(request: Request, ctx: Context) -> Response:
    """System-level export (``_type``, ``_since``, ``_typeFilter``, ``_elements``,
    ``_outputFormat``; header ``Prefer: respond-async``, ``handling=lenient``)."""
    return await _kickoff(request, ctx, "system", None)


@router.get("/Patient/$export", **docs.export_route("export all patients' records", kickoff=True))
async def export_patients(request: Request, ctx: Context) -> Response:
    """Every resident's record (Patient compartment types)."""
    return await _kickoff(request, ctx, "patient", None)


@router.get(
    "/Group/{resource_id}/$export",
    **docs.export_route("export a group's records", kickoff=True, instance=True),
)
async def export_group(resource_id: ResourceId, request: Request, ctx: Context) -> Response:
    """The records of a Group's Patient members."""
    return await _kickoff(request, ctx, "group", check_id(resource_id))


async def _with_body(request: Request, ctx: RequestContext) -> RequestContext:
    """A POST kick-off: the Parameters body's parameters as if they were the URL's
    (the audit records them so too); one given in both places is a 400."""
    query = merged(ctx.query, body_query(await json_body(request, JSON_BODY)))
    return replace(ctx, query=query, query_string=urlencode(query, doseq=True))


@router.post(
    "/$export", **docs.export_route("export everything (async kick-off)", kickoff=True, post=True)
)
async def export_system_post(request: Request, ctx: Context) -> Response:
    """System-level export, the parameters in a Parameters body."""
    return await _kickoff(request, await _with_body(request, ctx), "system", None)


@router.post(
    "/Patient/$export",
    **docs.export_route("export all patients' records", kickoff=True, post=True),
)
async def export_patients_post(request: Request, ctx: Context) -> Response:
    """Every resident's record, or those of ``patient``, by a Parameters body."""
    return await _kickoff(request, await _with_body(request, ctx), "patient", None)


@router.post(
    "/Group/{resource_id}/$export",
    **docs.export_route("export a group's records", kickoff=True, post=True, instance=True),
)
async def export_group_post(resource_id: ResourceId, request: Request, ctx: Context) -> Response:
    """The records of a Group's Patient members (or of ``patient`` among them)."""
    return await _kickoff(request, await _with_body(request, ctx), "group", check_id(resource_id))


@router.get("/$export-status/{job_id}", **docs.export_route("export status and manifest"))
async def export_status(request: Request, ctx: Context, job_id: str = JobId) -> Response:
    """202 with X-Progress while running; 200 with the manifest when done."""
    status, headers, manifest = await run_in_threadpool(
        _bulk(request).status, ctx, job_id, ctx.base_url
    )
    if manifest is None:
        return Response(status_code=status, headers=headers)
    return Response(jsonio.dumps(manifest), status_code=status, media_type="application/json")


@router.delete("/$export-status/{job_id}", **docs.export_route("cancel an export", cancel=True))
async def export_cancel(request: Request, ctx: Context, job_id: str = JobId) -> Response:
    await run_in_threadpool(_bulk(request).cancel, ctx, job_id)
    return Response(status_code=202)


@router.get(
    "/$export-file/{job_id}/{name}", **docs.export_route("an exported NDJSON file", file=True)
)
async def export_file(
    request: Request, ctx: Context, job_id: str = JobId, name: str = FileName
) -> Response:
    """One file of the manifest, to the client that asked for the export."""
    lines = await run_in_threadpool(_bulk(request).file, ctx, job_id, name)
    ctx.services.auditor.record_now(ctx, Result(200))
    return StreamingResponse(lines, media_type=NDJSON)
