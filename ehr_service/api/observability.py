"""Operations: ``/healthz`` (alive), ``/readyz`` (database reachable, migrations at
head, keys loaded), Prometheus ``/metrics``, and one structured JSON access-log
line per request (request id, client, interaction, status, duration; never the
query string or a body: they carry names and numbers)."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import time
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ehr_service.api import openapi_docs as docs
from ehr_service.api.middleware import request_id_of
from ehr_service.fhir.primitives import utc_now
from ehr_service.interactions.context import Services
from ehr_service.mpi.idnumber import mask_candidates

router = APIRouter(tags=["Operations"])
access_log = logging.getLogger("ehr_service.access")
_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _StateCollector(Collector):
    """Gauges read when scraped: outbox depth, audit chain length, pool use."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def collect(self) -> Any:
        from ehr_service.storage import audit as audit_store
        from ehr_service.storage import exchange as exchange_store

        outbox = GaugeMetricFamily(
            "ehr_exchange_outbox_rows",
            "Outbox rows by partner and state",
            labels=["partner", "state"],
        )
        chain = GaugeMetricFamily("ehr_audit_chain_length", "Events sealed on the audit chain")
        unsealed = GaugeMetricFamily(
            "ehr_audit_unsealed_events", "Audit events committed, not sealed in a block yet"
        )
        lag = GaugeMetricFamily(
            "ehr_audit_unsealed_oldest_seconds",
            "Age of the oldest audit event not sealed yet (0: none); alert when it grows",
        )
        try:
            with self.services.unit.read() as conn:
                for partner, state, rows, _oldest in exchange_store.status_counts(conn):
                    outbox.add_metric([partner, state], rows)
                chain.add_metric([], audit_store.head(conn).position)
                unsealed.add_metric([], audit_store.count_unsealed(conn))
                oldest = audit_store.oldest_unsealed(conn)
                age = (utc_now() - oldest).total_seconds() if oldest is not None else 0.0
                lag.add_metric([], max(age, 0.0))
        except Exception:  # a scrape never fails the service; readiness reports the database
            logging.getLogger(__name__).warning("metrics: the database could not be read")
        yield outbox
        yield chain
        yield unsealed
        yield lag
        pool = self.services.database.engine.pool
        checked_out = getattr(pool, "checkedout", None)
        in_use = GaugeMetricFamily("ehr_db_pool_in_use", "Database connections in use")
        in_use.add_metric([], float(checked_out()) if callable(checked_out) else 0.0)
        yield in_use


class Metrics:
    def __init__(self, services: Services) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "ehr_http_requests", "HTTP requests", ["interaction", "resource_type", "status"],
            registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "ehr_http_request_duration_seconds", "HTTP request latency",
            ["interaction", "resource_type"], buckets=_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.writes = Counter(
            "ehr_resource_writes",
            "Resource versions written (those of transactions later rolled back included)",
            ["resource_type"],
            registry=self.registry,
        )
        services.writes.listeners.append(lambda t: self.writes.labels(t).inc())
        self.registry.register(_StateCollector(services))


def _resource_type(path: str) -> str:
    parts = [p for p in path.split("/") if p]
    if len(parts) > 1 and parts[0] == "fhir" and parts[1][:1].isupper() and parts[1].isalpha():
        return parts[1]
    return "-"


class ObservabilityMiddleware:
    """Metrics and the JSON access log for every HTTP request."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            interaction = getattr(route, "name", None) or "unrouted"
            resource_type = _resource_type(scope.get("path", ""))
            self.metrics.requests.labels(interaction, resource_type, str(status)).inc()
            self.metrics.latency.labels(interaction, resource_type).observe(elapsed)
            caller = (scope.get("state") or {}).get("caller")
            access_log.info(
                "request",
                extra={
                    "request_id": request_id_of(scope),
                    "method": scope.get("method"),
                    "path": scope.get("path"),  # never the query string
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                    "interaction": interaction,
                    "client": getattr(caller, "client_id", None)
                    or getattr(caller, "subject", None),
                },
            )


_FIELDS = ("request_id", "method", "path", "status", "duration_ms", "interaction", "client")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the request's
    fields when present (ID numbers are masked before, by the redaction filter)."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in _FIELDS:
            value = getattr(record, name, None)
            if value is not None:  # a path may hold an ID number (/fhir/Patient/<number>)
                document[name] = mask_candidates(value) if isinstance(value, str) else value
        if record.exc_text or record.exc_info:
            document["error"] = record.exc_text or self.formatException(record.exc_info)  # type: ignore[arg-type]
        return json.dumps(document, ensure_ascii=False)


# -- endpoints --------------------------------------------------------------------------
@router.get("/healthz", **docs.plain_route("liveness"))
async def healthz() -> JSONResponse:
    """The process is alive (nothing else is checked)."""
    return JSONResponse({"status": "ok"})


def readiness(services: Services) -> tuple[bool, dict[str, Any]]:
    from ehr_service.storage.migrate import is_at_head

    checks: dict[str, Any] = {}
    checks["database"] = services.database.ping()
    try:
        checks["migrations"] = checks["database"] and is_at_head(
            services.database, services.settings.migrations_dir
        )
    except Exception:
        checks["migrations"] = False
    try:
        services.identity.protection.keyring.active  # noqa: B018 - loading is the check
        checks["field_keys"] = True
    except Exception:
        checks["field_keys"] = False
    from ehr_service.exchange.keys import SigningKeys
    from ehr_service.exchange.suites import members

    keys = SigningKeys(services.settings.signing_keys_dir)
    checks["signing_key"] = all(  # an active key for each suite the region signs with
        keys.active(suite) is not None for suite in members(services.settings.crypto_suite)
    )
    free_mb = shutil.disk_usage(services.settings.data_dir).free // (1024 * 1024)
    checks["disk"] = free_mb >= services.settings.min_free_disk_mb
    checks["disk_free_mb"] = free_mb  # reported, not a check
    return all(v for k, v in checks.items() if k != "disk_free_mb"), checks


@router.get("/readyz", **docs.plain_route("readiness"))
async def readyz(request: Request) -> JSONResponse:
    """Ready to serve: the database answers, its schema is at head, keys are loaded.
    503 with the failing checks otherwise."""
    services: Services = request.app.state.services
    ready, checks = await _bounded_readiness(request, services)
    headers = {} if ready else {"Retry-After": str(services.settings.retry_after_s)}
    return JSONResponse(
        {"status": "ready" if ready else "not-ready", "checks": checks},
        status_code=200 if ready else 503,
        headers=headers,
    )


async def _bounded_readiness(request: Request, services: Services) -> tuple[bool, dict[str, Any]]:
    """The checks, within ``EHR_READINESS_TIMEOUT_S`` whatever the database does. One
    check runs at a time: probes that come while it is stuck wait on the same one
    (a stalled database cannot pile up blocked threads)."""
    running: asyncio.Future[tuple[bool, dict[str, Any]]] | None = getattr(
        request.app.state, "readiness_check", None
    )
    if running is None or running.done():
        running = asyncio.ensure_future(run_in_threadpool(readiness, services))
        request.app.state.readiness_check = running
    try:
        return await asyncio.wait_for(
            asyncio.shield(running), timeout=services.settings.readiness_timeout_s
        )
    except TimeoutError:
        timeout = services.settings.readiness_timeout_s
        return False, {"database": f"no answer within {timeout:g} s"}


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    responses={200: {"description": "Prometheus text format", "content": {"text/plain": {}}}},
    openapi_extra={"security": []},
    response_class=Response,
)
async def metrics(request: Request) -> Response:
    registry = request.app.state.metrics.registry
    body = await run_in_threadpool(generate_latest, registry)
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")
