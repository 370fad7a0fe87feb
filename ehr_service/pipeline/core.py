"""The write pipeline's core: server meta, validation, the hooks in stage order,
and the version that storage writes (see :mod:`ehr_service.pipeline.draft`).

The server owns ``id``, ``meta.versionId`` and ``meta.lastUpdated`` (R4
§3.1.0.1.1): whatever the client sent there is replaced, and what is stored (and
later served byte for byte) is the client's JSON with those three set.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from ehr_service.fhir import jsonio
from ehr_service.fhir.compartment import PatientCompartment
from ehr_service.fhir.errors import Category, FhirError, Issue
from ehr_service.fhir.primitives import format_instant
from ehr_service.fhir.profiles import Conformance, Resolver
from ehr_service.fhir.search.registry import SearchParameterRegistry
from ehr_service.fhir.search.values import IndexRows, index_rows
from ehr_service.fhir.validation import validate_resource
from ehr_service.pipeline.draft import Deletion, Draft, Hook, Stage, WriteRequest
from ehr_service.storage import resources
from ehr_service.storage.resources import NewVersion, StoredVersion

# Types only the service writes, refused on every write path: its own audit events,
# and the definitions of the operations it implements (shipped as data files).
READ_ONLY_REASONS = {
    "AuditEvent": "the service records its own events",
    "OperationDefinition": "the service publishes the definitions of its own operations",
}
READ_ONLY_TYPES = frozenset(READ_ONLY_REASONS)


def read_only(resource_type: str, method: str, path: str) -> FhirError:
    """405 for a write (or an unsupported read) of a type only the service writes."""
    # [type], [type]/[id] are read; an operation's path ($validate) offers nothing here
    allowed = "GET, HEAD" if path.rstrip("/").count("/") <= 2 and "$" not in path else ""
    return FhirError(
        Category.METHOD_NOT_ALLOWED,
        (
            Issue(
                f"{resource_type} is read-only: {READ_ONLY_REASONS[resource_type]}; "
                f"{method} {path[:120]} is not supported",
                "not-supported",
            ),
        ),
        headers={"Allow": allowed},
    )


def with_server_meta(
    resource: dict[str, Any], resource_id: str, version_id: int, now: datetime
) -> dict[str, Any]:
    meta = resource.get("meta")
    meta = dict(meta) if isinstance(meta, dict) else {}
    meta["versionId"] = str(version_id)
    meta["lastUpdated"] = format_instant(now)
    out: dict[str, Any] = {"resourceType": resource.get("resourceType"), "id": resource_id}
    out["meta"] = meta
    for key, value in resource.items():
        if key not in out:
            out[key] = value
    return out


def check_conformance(
    conformance: Conformance | None, resolver: Resolver | None, resource: dict[str, Any]
) -> None:
    """Required-binding codes (400), and the service's profiles the resource claims
    in meta.profile (422: it is valid FHIR, but not what it claims to be)."""
    if conformance is None:
        return
    issues = conformance.bindings.issues(resource)
    if issues:
        raise FhirError(Category.INCORRECT, tuple(issues))
    claimed = conformance.profiles.claimed(resource)
    if claimed:
        found = (
            conformance.profile_issues(resource, claimed, resolver)
            if resolver is not None
            else conformance.profile_issues(resource, claimed)
        )
        if found:
            raise FhirError(Category.UNPROCESSABLE, tuple(found))


class WritePipeline:
    """One per process (``Services.pipeline``); hooks are registered once, at start."""

    def __init__(
        self,
        registry: SearchParameterRegistry,
        compartment: PatientCompartment,
        conformance: Conformance | None = None,
        resolver: Resolver | None = None,  # codes of the service's own value sets
    ) -> None:
        self.registry = registry
        self.compartment = compartment
        self.conformance = conformance
        self.resolver = resolver
        self._hooks: dict[Stage, list[Hook]] = {stage: [] for stage in Stage}

    def register(self, *hooks: Hook) -> None:
        for hook in hooks:
            if hook.stage is Stage.SEAL and self._hooks[Stage.SEAL]:
                raise ValueError("one hook makes the stored form (Stage.SEAL)")
            self._hooks[hook.stage].append(hook)

    def hook_names(self) -> list[tuple[str, str]]:
        """(stage, hook) in the order they run, for docs and tests."""
        return [(stage.name, h.name) for stage in Stage for h in self._hooks[stage]]

    def index_of(self, resource: dict[str, Any]) -> IndexRows:
        return index_rows(self.registry, resource)

    def validate_ahead(self, resource: Any, resource_type: str, method: str, now: datetime) -> None:
        """The structural checks of :meth:`prepare`, before any transaction opens (a
        bundle's resources are validated while no lock is held)."""
        self._structured(resource, resource_type, "validated-ahead", 1, now, method, validate=True)

    def _structured(
        self,
        resource: Any,
        resource_type: str,
        resource_id: str,
        version_id: int,
        now: datetime,
        method: str,
        *,
        validate: bool,
    ) -> dict[str, Any]:
        if not isinstance(resource, dict):
            raise FhirError.of(
                Category.INCORRECT, "A resource must be a JSON object", code="structure"
            )
        if resource_type in READ_ONLY_TYPES:
            raise read_only(resource_type, method, f"/{resource_type}")
        if "meta" in resource and not isinstance(resource["meta"], dict):
            raise FhirError.of(
                Category.INCORRECT, "meta must be an object", code="structure", expression=["meta"]
            )
        stored = with_server_meta(resource, resource_id, version_id, now)
        if validate:
            validate_resource(stored, expected_type=resource_type)
        return stored

    def prepare(
        self,
        conn: Connection,
        request: WriteRequest,
        resource: Any,
        *,
        resource_type: str,
        resource_id: str,
        version_id: int,
        now: datetime,
        method: str,
        previous: bytes | None = None,
        validated: bool = False,
    ) -> tuple[NewVersion, dict[str, Any]]:
        """Validate and serialise one version (a 400 lists every problem); returns
        it and its stored JSON. ``previous``: the stored content it follows.
        ``validated``: :meth:`validate_ahead` has checked this resource already
        (references rewritten since are still strings: the verdict holds)."""
        stored = self._structured(resource, resource_type, resource_id, version_id, now, method,
                                  validate=not validated)  # fmt: skip
        check_conformance(self.conformance, self.resolver, stored)
        draft = Draft(
            conn=conn,
            request=request,
            resource_type=resource_type,
            resource_id=resource_id,
            version_id=version_id,
            now=now,
            method=method,
            resource=stored,
            previous=jsonio.loads(previous) if previous else None,
            index_of=self.index_of,
        )
        self._run(Stage.RESOURCE, draft)
        if self._hooks[Stage.SEAL]:
            self._run(Stage.SEAL, draft)
        else:
            draft.content, draft.index = jsonio.dumps(draft.resource), self.index_of(draft.resource)
        assert draft.content is not None, "the SEAL hook makes the stored form"
        draft.patients = tuple(self.compartment.patient_ids(draft.resource, request.base_url))
        draft.owner = draft.patients[0] if draft.patients else None
        self._run(Stage.OWNER, draft)
        self._run(Stage.VERSION, draft)
        version = NewVersion(
            resource_type=resource_type,
            resource_id=resource_id,
            version_id=version_id,
            last_updated=now,
            method=method,
            compartment_patient_id=draft.owner,
            content=draft.content,
            index=draft.index,
            id_number=draft.id_number,
            id_number_claims=draft.id_number_claims,
            warnings=tuple(draft.warnings),
            consent=draft.consent,
            outbox=draft.outbox,
        )
        return version, draft.resource

    def deletion(
        self, conn: Connection, request: WriteRequest, stored: StoredVersion, now: datetime
    ) -> NewVersion:
        """The version that deletes ``stored`` (DELETE hooks run first)."""
        gone = Deletion(
            conn, request, stored.resource_type, stored.resource_id, stored.compartment_patient_id
        )
        for hook in self._hooks[Stage.DELETE]:
            if hook.applies_to(stored.resource_type):
                hook.run(gone)
        return NewVersion(
            resource_type=stored.resource_type,
            resource_id=stored.resource_id,
            version_id=stored.version_id + 1,
            last_updated=now,
            method="DELETE",
            compartment_patient_id=stored.compartment_patient_id,
            content=None,
        )

    def store_next(
        self,
        conn: Connection,
        request: WriteRequest,
        stored: StoredVersion,
        body: Any,
        *,
        method: str,
        now: datetime,
    ) -> NewVersion | None:
        """Write ``body`` as the version after ``stored`` (locked by the caller);
        None when a concurrent writer got there first."""
        version, _ = self.prepare(
            conn,
            request,
            body,
            resource_type=stored.resource_type,
            resource_id=stored.resource_id,
            version_id=stored.version_id + 1,
            now=now,
            method=method,
            previous=stored.content,
        )
        return version if resources.replace_current(conn, version, stored.version_id) else None

    def _run(self, stage: Stage, draft: Draft) -> None:
        for hook in self._hooks[stage]:
            if hook.applies_to(draft.resource_type):
                hook.run(draft)
