"""FHIR Bulk Data export routes (``$export`` at system, Patient and Group level, the
status URL and the files). Registered before the generic FHIR routes."""

from __future__ import annotations

from fastapi import APIRouter, Path, Request
from fastapi.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse

from ehr_service.api import openapi_docs as docs
from ehr_service.api.deps import Context
from ehr_service.api.fhir import ResourceId
from ehr_service.fhir import jsonio
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
    job_id = await run_in_threadpool(
        bulk.kickoff, ctx, kind, group, request.headers.get("prefer"), str(request.url)
    )
    return Response(
        status_code=202, headers={"Content-Location": f"{ctx.base_url}/$export-status/{job_id}"}
    )


@router.get("/$export", **docs.export_route("export everything (async kick-off)", kickoff=True))
async def export_system(request: Request, ctx: Context) -> Response:
    """System-level export (``_type``, ``_since``; header ``Prefer: respond-async``)."""
    return await _kickoff(request, ctx, "system", None)


@router.get("/Patient/$export", **docs.export_route("export all patients' records", kickoff=True))
async def export_patients(request: Request, ctx: Context) -> Response:
    """Every resident's record (Patient compartment types)."""
    return await _kickoff(request, ctx, "patient", None)


@router.get(
    "/Group/{resource_id}/$export", **docs.export_route("export a group's records", kickoff=True)
)
async def export_group(resource_id: ResourceId, request: Request, ctx: Context) -> Response:
    """The records of a Group's Patient members."""
    return await _kickoff(request, ctx, "group", check_id(resource_id))


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
