"""create_app(settings): wires routers, middleware and the service lifespan."""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from ehr_service import __version__
from ehr_service.api import (
    api_docs,
    audit,
    bulk,
    cds_hooks,
    citizen,
    dashboard,
    definitions,
    discovery,
    errors,
    exchange,
    fhir,
    mpi,
    observability,
    recognition,
)
from ehr_service.api import (
    terminology as terminology_api,
)
from ehr_service.api.middleware import (
    BodySizeLimitMiddleware,
    HeadAsGetMiddleware,
    RequestIdMiddleware,
)
from ehr_service.api.server import DrainMiddleware
from ehr_service.audit.archive import Archiver
from ehr_service.audit.events import Auditor
from ehr_service.audit.sealing import Sealer
from ehr_service.config import Settings
from ehr_service.exchange.keys import SigningKeys
from ehr_service.exchange.service import Exchange
from ehr_service.fhir.compartment import load_compartment
from ehr_service.fhir.operations import load_operation_definitions
from ehr_service.fhir.profiles import Conformance
from ehr_service.fhir.search.registry import load_registry
from ehr_service.hooks import build_pipeline
from ehr_service.interactions import terminology
from ehr_service.interactions.bulk_export import BulkExports
from ehr_service.interactions.context import Services, WriteListeners
from ehr_service.mpi.health_card import verifier_from
from ehr_service.mpi.identity import ResidentIdentity
from ehr_service.recognition.catalogue import SHIPPED, Catalogues
from ehr_service.security.caller import operator
from ehr_service.security.ciphers import suite
from ehr_service.security.consent import legal_basis
from ehr_service.security.ratelimit import RateLimiter
from ehr_service.security.tokens import TokenVerifier
from ehr_service.storage.database import Database, Timeouts
from ehr_service.storage.identity import holds_id_numbers
from ehr_service.storage.unit_of_work import UnitOfWork

logger = logging.getLogger("ehr_service")


def _archiver(services: Services, keys: SigningKeys) -> Archiver | None:
    """With ``EHR_AUDIT_ONLINE_DAYS``, each server archives older signed blocks
    once an hour (docs/architecture.md §9, "Retention"), as the service's own act."""
    settings = services.settings
    if not settings.audit_online_days:
        return None
    service = operator("ehr-service")
    archiver = Archiver(
        services.unit, keys, settings.effective_audit_archive_dir,
        anchors=settings.effective_audit_anchors_file,
        audit=lambda: services.auditor.operator_event(service, "audit-archive"),
    )  # fmt: skip
    archiver.start(timedelta(days=settings.audit_online_days))
    return archiver


def build_services(settings: Settings) -> Services:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    database = Database(
        settings.effective_database_url,
        pool_size=settings.database_pool_size,
        statement_timeout_ms=settings.statement_timeout_ms,
        timeouts=Timeouts(
            connect=settings.database_connect_timeout_s,
            checkout=settings.database_checkout_timeout_s,
            keepalive_idle=settings.database_keepalive_s,
            stall=settings.database_stall_s,
        ),
    )
    unit = UnitOfWork(database)
    auditor = Auditor(unit, legal_basis(settings.sharing_policy), settings.region)
    unit.events_after_read = auditor.append_all_now  # reads' events: the group commit
    compartment = load_compartment(settings.profiles_dir)
    registry = load_registry(settings.profiles_dir)
    identity = ResidentIdentity.from_settings(settings)
    catalogues = Catalogues(unit, settings.profiles_dir / SHIPPED)
    conformance = Conformance.load(settings.profiles_dir)
    load_operation_definitions(settings.profiles_dir)  # checked at start: a bad file stops it
    writes = WriteListeners()
    pipeline, remarker = build_pipeline(
        settings, registry, compartment, conformance, identity, catalogues, writes
    )
    return Services(
        settings=settings,
        database=database,
        compartment=compartment,
        registry=registry,
        identity=identity,
        tokens=TokenVerifier(settings),
        unit=unit,
        auditor=auditor,
        rate_limiter=RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst),
        pipeline=pipeline,
        catalogues=catalogues,
        conformance=conformance,
        writes=writes,
        remarker=remarker,
    )


def check_field_keys(services: Services) -> None:
    """Refuse to start with freshly made field keys over a database that already
    holds sealed ID numbers: the keys were lost or this is the wrong data directory,
    and going on would make duplicates and unreadable records."""
    keyring = services.identity.protection.keyring
    if not keyring.created:
        return
    if holds_id_numbers(services.unit):
        raise RuntimeError(
            "The field keys were just created, but the database already holds sealed "
            "resident ID numbers: restore the key file "
            f"({services.settings.effective_field_keys_file.name}) or set EHR_FIELD_KEYS_FILE"
        )
    keyring.created = False  # checked: from now on these are the database's keys


class PushWorker:
    """The optional in-process outbox worker (``EHR_EXCHANGE_PUSH_INTERVAL_SECONDS``):
    a daemon thread running ``exchange push`` every interval."""

    def __init__(self, exchange: Exchange, interval: float) -> None:
        self.exchange = exchange
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.interval > 0:
            self._thread = threading.Thread(target=self._run, name="exchange-push", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                report = self.exchange.outbound.push()
            except Exception:  # keep the worker alive; the next round retries
                logger.exception("exchange push round failed")
                continue
            if report.sent or report.failed or report.dead:
                logger.info(
                    "exchange push: sent %d, retry %d, dead %d",
                    report.sent, report.failed, report.dead,
                )  # fmt: skip

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)


def tune_garbage_collector(threshold: int) -> None:
    """Ingest allocates many short-lived containers (validation models, index rows):
    Python's default gen-0 threshold of 700 then spends ~20% of the time in the
    collector (measured on transaction ingest). Long-lived start-up objects (models,
    search parameter registry) are frozen out of collection altogether."""
    if threshold <= 0:
        return
    gc.freeze()
    _, second, third = gc.get_threshold()
    gc.set_threshold(threshold, second, third)


# What a browser app may send and read (CORS, when EHR_CORS_ORIGINS allows it).
CORS_REQUEST_HEADERS = [
    "Authorization", "Content-Type", "Accept", "Prefer", "If-Match", "If-None-Match",
    "If-None-Exist", "If-Modified-Since", "X-Request-Id",
]  # fmt: skip
CORS_RESPONSE_HEADERS = [
    "Location", "Content-Location", "ETag", "Last-Modified", "X-Request-Id", "Retry-After",
    "X-Progress",
]  # fmt: skip


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    settings = settings or (services.settings if services else Settings())
    owned = services is None
    services = services or build_services(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        check_field_keys(services)
        app.state.exchange.keys.ensure_active(settings.crypto_suite)  # first run: its keys
        if services.catalogues is not None:
            services.catalogues.ensure_loaded()  # first run: the shipped catalogue edition
            terminology.publish_if_absent(services)  # and its CodeSystem, ValueSets, map
        tune_garbage_collector(settings.gc_threshold)
        if settings.demo_data:
            from ehr_service.demo import load_demo_data

            load_demo_data(services)
        app.state.bulk.recover()
        worker = PushWorker(app.state.exchange, settings.exchange_push_interval_seconds)
        worker.start()
        keys = app.state.exchange.keys
        sealer = Sealer(services.unit, keys, interval=settings.audit_seal_seconds,
                        anchors=settings.effective_audit_anchors_file,
                        chain=suite(settings.crypto_suite).chain_hash)  # fmt: skip
        sealer.start()
        archiver = _archiver(services, keys)
        yield
        if archiver is not None:
            archiver.stop()
        worker.stop()  # a push under way finishes; its rows are leased, never half-sent
        app.state.bulk.shutdown()
        sealer.stop()  # and seals what is committed by then
        if owned:
            services.database.dispose()

    app = FastAPI(
        title="ehr-service",
        version=__version__,
        description="FHIR R4 lifelong health record service",
        lifespan=lifespan,
        docs_url=None,  # /docs and /redoc from the packaged assets: api/api_docs.py
        redoc_url=None,
    )
    app.state.services = services
    app.state.exchange = Exchange(services)
    app.state.health_cards = verifier_from(services.settings)  # one per process (replays)
    app.state.bulk = BulkExports(services)
    app.state.metrics = observability.Metrics(services)
    # The routers' routes join the application's one table, in this order (specific
    # routes before the generic /fhir/{type}/{id}): matched as one list, without
    # FastAPI's per-request walk through included routers (a tenth of a read's CPU).
    # The route objects are the routers' own, shared by every app of the process:
    # app.dependency_overrides does not reach them (tests replace services instead).
    for router in (
        observability.router,  # /healthz, /readyz, /metrics
        discovery.router,  # before the generic routes: /fhir/.well-known
        mpi.router,  # before the generic routes: /Patient/$ihe-pix
        recognition.router,  # before them too: /fhir/$recognition-stats
        bulk.router,  # and /fhir/$export, /fhir/Patient/$export
        audit.router,  # and /fhir/AuditEvent (read-only)
        definitions.router,  # and /fhir/OperationDefinition (read-only)
        terminology_api.router,  # and /fhir/ValueSet/$expand...
        fhir.router,
        citizen.router,
        exchange.router,
        cds_hooks.router,  # /cds-services (CDS Hooks 2.0)
        dashboard.router,  # /dashboard (operations)
    ):
        app.router.routes.extend(router.routes)
    api_docs.install(app)  # /docs, /redoc and their assets, served without a CDN
    errors.install(app)
    app.add_middleware(HeadAsGetMiddleware)  # innermost: HEAD is routed as GET
    app.add_middleware(errors.UnexpectedErrors)  # the others see its 500
    app.add_middleware(BodySizeLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(DrainMiddleware, retry_after=settings.retry_after_s)
    app.add_middleware(observability.ObservabilityMiddleware, metrics=app.state.metrics)
    app.add_middleware(RequestIdMiddleware)  # the others see the request id
    if settings.cors_origins:  # outermost: a browser's preflight is answered first
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=CORS_REQUEST_HEADERS,
            expose_headers=CORS_RESPONSE_HEADERS,
            allow_credentials=False,  # bearer tokens, never cookies
            max_age=600,
        )
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document without its generic 422 answers: this API reports
    request errors as 400 OperationOutcomes."""
    if app.openapi_schema:
        return app.openapi_schema
    from fastapi.openapi.utils import get_openapi

    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            response = operation.get("responses", {}).get("422")
            if response and "HTTPValidationError" in str(response):
                del operation["responses"]["422"]
    schema.setdefault("components", {})["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    }
    schema["security"] = [{"bearer": []}]
    for path in ("/fhir/metadata",):
        for operation in schema["paths"].get(path, {}).values():
            operation["security"] = []  # discovery: no token needed
    components = schema.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    if "components" in schema and not components:
        schema["components"].pop("schemas", None)
        if not schema["components"]:
            del schema["components"]
    app.openapi_schema = schema
    return schema
