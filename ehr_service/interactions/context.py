"""What an interaction needs: long-lived services and the per-request context."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from ehr_service.audit.events import Auditor
from ehr_service.config import Settings
from ehr_service.fhir.compartment import PatientCompartment, Visibility
from ehr_service.fhir.profiles import Conformance
from ehr_service.fhir.search.query import SearchParser
from ehr_service.fhir.search.registry import SearchParameterRegistry
from ehr_service.mpi.identity import ResidentIdentity
from ehr_service.pipeline import WritePipeline, WriteRequest
from ehr_service.recognition.catalogue import Catalogues
from ehr_service.recognition.remarking import Remarker
from ehr_service.security.caller import ANONYMOUS, Caller
from ehr_service.security.policy import visibility
from ehr_service.security.ratelimit import RateLimiter
from ehr_service.security.tokens import TokenVerifier
from ehr_service.storage.database import Database
from ehr_service.storage.unit_of_work import UnitOfWork


class WriteListeners:
    """Who wants to know that a resource version was written (metrics)."""

    def __init__(self) -> None:
        self.listeners: list[Callable[[str], None]] = []

    def written(self, resource_type: str) -> None:
        for listener in self.listeners:
            listener(resource_type)


@dataclass(frozen=True, slots=True)
class Services:
    """Created once per process by ``create_app``."""

    settings: Settings
    database: Database
    unit: UnitOfWork  # every transaction, and the audit events recorded in it
    compartment: PatientCompartment
    registry: SearchParameterRegistry
    identity: ResidentIdentity
    tokens: TokenVerifier
    auditor: Auditor
    rate_limiter: RateLimiter
    pipeline: WritePipeline  # every stored version, with each domain's hooks
    catalogues: Catalogues | None = None  # the recognition catalogue (docs/architecture.md §7)
    conformance: Conformance | None = None  # required bindings and profiles
    writes: WriteListeners = field(default_factory=WriteListeners)
    remarker: Remarker | None = None  # keeps recognition marks true (docs/architecture.md §7)


class ReturnPreference(StrEnum):
    """``Prefer: return=...`` (FHIR R4 §3.1.0.8.1)."""

    MINIMAL = "minimal"
    REPRESENTATION = "representation"
    OPERATION_OUTCOME = "OperationOutcome"


@dataclass(frozen=True, slots=True)
class RequestContext:
    services: Services
    base_url: str  # e.g. http://127.0.0.1:8080/fhir, no trailing slash
    request_id: str = "-"
    caller: Caller = ANONYMOUS
    prefer_return: ReturnPreference = ReturnPreference.REPRESENTATION
    query: dict[str, list[str]] = field(default_factory=dict)
    interaction: str = ""  # the route's name, for the audit
    query_string: str = ""  # as received, for the audit (ID numbers are masked there)
    path: str = ""  # the URL path, for the audit
    from_partner: str | None = None  # written by a signed exchange from this partner

    @property
    def settings(self) -> Settings:
        return self.services.settings

    @property
    def write_request(self) -> WriteRequest:
        """The request as the write pipeline sees it."""
        return WriteRequest(self.base_url, self.view, self.from_partner, self.request_id)

    @property
    def view(self) -> Visibility:
        """What this caller may see (one patient's compartment for patient tokens)."""
        settings = self.services.settings
        return visibility(
            self.caller,
            self.services.compartment.member_types(),
            settings.sharing_policy,
            settings.region,
        )


def search_parser(ctx: RequestContext) -> SearchParser:
    """The parser every search goes through: ID numbers become their blind tokens."""
    return SearchParser(ctx.services.registry, ctx.services.identity.protection.search_code)
