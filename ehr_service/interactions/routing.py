"""Where a request goes: the one table from (method, path) to an interaction.

Used for bundle entries (R4 §3.1.0.11, ``Bundle.entry.request``); the HTTP API
declares the same shapes as FastAPI routes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import parse_qs, urlsplit

from ehr_service.fhir.errors import Category, FhirError
from ehr_service.fhir.references import is_valid_id
from ehr_service.fhir.resource_types import R4_RESOURCE_TYPES
from ehr_service.interactions.audit_events import READ_ONLY_TYPES, read_only
from ehr_service.mpi.idnumber import is_id_number, mask_candidates


class Interaction(StrEnum):
    CAPABILITIES = "capabilities"
    READ = "read"
    VREAD = "vread"
    CREATE = "create"
    UPDATE = "update"
    PATCH = "patch"
    DELETE = "delete"
    HISTORY_INSTANCE = "history-instance"
    HISTORY_TYPE = "history-type"
    HISTORY_SYSTEM = "history-system"
    SEARCH_TYPE = "search-type"
    CONDITIONAL = "conditional"  # conditional update/patch/delete


@dataclass(frozen=True, slots=True)
class Route:
    interaction: Interaction
    method: str = "GET"
    resource_type: str | None = None
    resource_id: str | None = None
    version_id: str | None = None
    query: dict[str, list[str]] | None = None


def unknown_type(resource_type: str) -> FhirError:
    return FhirError.of(
        Category.NOT_FOUND,
        f"'{resource_type[:64]}' is not a FHIR R4 resource type",
        code="not-supported",
    )


def check_type(resource_type: str) -> str:
    if resource_type not in R4_RESOURCE_TYPES:
        raise unknown_type(resource_type)
    return resource_type


def check_id(resource_id: str) -> str:
    if not is_valid_id(resource_id):
        raise FhirError.of(
            Category.INCORRECT,
            f"'{mask_candidates(resource_id[:70])}' is not a valid resource id",
            code="value",
        )
    if is_id_number(resource_id):  # it would end up in every table and log line
        raise FhirError.of(
            Category.INCORRECT,
            "A resident ID number cannot be a resource id; use it as an identifier",
            code="value",
        )
    return resource_id


def route(method: str, url: str, base_url: str) -> Route:
    """Resolve a bundle entry's ``request.method`` and ``request.url``."""
    if url.startswith(base_url + "/"):
        url = url[len(base_url) + 1 :]
    parts = urlsplit(url)
    if parts.scheme or parts.netloc:
        raise FhirError.of(
            Category.INCORRECT, f"request.url '{url[:100]}' is not on this server", code="value"
        )
    query = parse_qs(parts.query, keep_blank_values=True)
    segments = [s for s in parts.path.strip("/").split("/") if s]
    method = method.upper()
    shape = (method, len(segments))
    if segments == ["metadata"] and method in {"GET", "HEAD"}:
        return Route(Interaction.CAPABILITIES, method, query=query)
    if segments == ["_history"] and method in {"GET", "HEAD"}:
        return Route(Interaction.HISTORY_SYSTEM, method, query=query)
    if not segments:
        raise FhirError.of(Category.INCORRECT, "request.url names no resource type", code="value")
    resource_type = check_type(segments[0])
    if resource_type in READ_ONLY_TYPES and (method not in {"GET", "HEAD"} or len(segments) > 2):
        raise read_only(resource_type, method, "/" + "/".join(segments))
    if len(segments) == 1:
        if method == "POST":
            return Route(Interaction.CREATE, method, resource_type, query=query)
        if method in {"GET", "HEAD"}:
            return Route(Interaction.SEARCH_TYPE, method, resource_type, query=query)
        if method in {"PUT", "PATCH", "DELETE"}:
            return Route(Interaction.CONDITIONAL, method, resource_type, query=query)
    if len(segments) == 2 and segments[1] == "_history" and method in {"GET", "HEAD"}:
        return Route(Interaction.HISTORY_TYPE, method, resource_type, query=query)
    if len(segments) >= 2:
        resource_id = check_id(segments[1])
        by_shape = {
            ("GET", 2): Interaction.READ,
            ("HEAD", 2): Interaction.READ,
            ("PUT", 2): Interaction.UPDATE,
            ("PATCH", 2): Interaction.PATCH,
            ("DELETE", 2): Interaction.DELETE,
        }
        if shape in by_shape:
            return Route(by_shape[shape], method, resource_type, resource_id, query=query)
        if segments[2:3] == ["_history"] and method in {"GET", "HEAD"}:
            if len(segments) == 3:
                return Route(
                    Interaction.HISTORY_INSTANCE, method, resource_type, resource_id, query=query
                )
            if len(segments) == 4:
                return Route(
                    Interaction.VREAD, method, resource_type, resource_id, segments[3], query
                )
    raise FhirError.of(
        Category.INCORRECT, f"{method} {url[:100]} is not a FHIR interaction", code="not-supported"
    )
