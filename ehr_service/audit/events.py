"""Build and record AuditEvents (IHE BALP-style): who (subject, client,
organisation), what (interaction, resource, the patients touched, the query with
ID numbers masked), when, why (purpose of use) and the outcome. Never the result
content.

Writes record their event in their own transaction, so a write and its audit
commit together; reads, failures and login failures record theirs in a short
transaction of their own.
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import Connection

from ehr_service.fhir.errors import FhirError
from ehr_service.fhir.primitives import format_instant, utc_now
from ehr_service.mpi.idnumber import mask_candidates
from ehr_service.security.caller import Caller
from ehr_service.storage import audit as audit_store
from ehr_service.storage.audit import NewEvent
from ehr_service.storage.database import Database

if TYPE_CHECKING:
    from ehr_service.interactions.context import RequestContext
    from ehr_service.interactions.results import Result

logger = logging.getLogger(__name__)

REST = {
    "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
    "code": "rest",
    "display": "RESTful Operation",
}
LOGIN = {
    "system": "http://dicom.nema.org/resources/ontology/DCM",
    "code": "110114",
    "display": "User Authentication",
}
# Signed exchanges (DESIGN.md §8) are DICOM import/export events, not REST ones.
IMPORT = {
    "system": "http://dicom.nema.org/resources/ontology/DCM",
    "code": "110107",
    "display": "Import",
}
EXPORT = {
    "system": "http://dicom.nema.org/resources/ontology/DCM",
    "code": "110106",
    "display": "Export",
}
EXCHANGE = {
    "exchange_receive": (IMPORT, "C"),
    "exchange_pull": (IMPORT, "C"),
    "exchange_feed": (EXPORT, "R"),
    "exchange_push": (EXPORT, "R"),
}
# route name -> (restful-interaction code, action)
INTERACTIONS: dict[str, tuple[str, str]] = {
    "capabilities": ("capabilities", "E"),
    "read_resource": ("read", "R"),
    "vread_resource": ("vread", "R"),
    "search_get": ("search-type", "E"),
    "search_post": ("search-type", "E"),
    "create_resource": ("create", "C"),
    "update_resource": ("update", "U"),
    "patch_resource": ("patch", "U"),
    "delete_resource": ("delete", "D"),
    "conditional_update": ("update", "U"),
    "conditional_patch": ("patch", "U"),
    "conditional_delete": ("delete", "D"),
    "history_instance": ("history-instance", "R"),
    "history_type": ("history-type", "R"),
    "history_system": ("history-system", "R"),
    "batch_or_transaction": ("transaction", "E"),
    "everything_patient": ("operation", "E"),
    "everything_all": ("operation", "E"),
    "patient_match": ("operation", "E"),
    "patient_merge": ("operation", "U"),
    "patient_pix": ("operation", "E"),
    "patient_pix_post": ("operation", "E"),
    "recognizable_results": ("operation", "E"),
    "recognition_decision": ("operation", "C"),
    "recognition_stats": ("operation", "E"),
    "validate_type": ("operation", "E"),
    "validate_instance": ("operation", "E"),
    "validate_stored": ("operation", "E"),
    "export_system": ("operation", "E"),
    "export_patients": ("operation", "E"),
    "export_group": ("operation", "E"),
    "export_status": ("operation", "E"),
    "export_cancel": ("operation", "D"),
    "export_file": ("operation", "R"),
    "audit_search": ("search-type", "E"),
    "audit_search_post": ("search-type", "E"),
    "audit_read": ("read", "R"),
}


def outcome_code(status: int) -> str:
    """AuditEvent.outcome: 0 success, 4 minor failure (refused), 8 serious failure."""
    if status < 400:
        return "0"
    return "4" if status < 500 else "8"


def _agents(caller: Caller) -> list[dict[str, Any]]:
    agent: dict[str, Any] = {
        "type": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/extra-security-role-type",
                    "code": "humanuser" if caller.kind in {"user", "patient"} else "dataprocessor",
                }
            ]
        },
        "role": [{"text": caller.kind}],  # patient | user | system | anonymous
        "who": {"identifier": {"system": "urn:ehr-service:token-subject", "value": caller.subject}},
        "requestor": True,
        "purposeOfUse": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                        "code": caller.purpose,
                    }
                ]
            }
        ],
    }
    if caller.client_id:
        agent["altId"] = caller.client_id
    agents = [agent]
    if caller.organization:
        agents.append(
            {
                "type": {"text": "organization"},
                "who": {"reference": caller.organization}
                if caller.organization.startswith("Organization/")
                else {"display": caller.organization},
                "requestor": False,
            }
        )
    return agents


def event_json(
    *,
    seq: int,
    recorded: datetime,
    kind: str,
    action: str,
    status: int,
    caller: Caller,
    patients: Iterable[str],
    what: str | None,
    query: str | None,
    login: bool = False,
    data_type: str | None = None,
    event_type: dict[str, str] | None = None,
) -> bytes:
    entities: list[dict[str, Any]] = [
        {
            "what": {"reference": f"Patient/{p}"},
            "type": {
                "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                "code": "1",
            },
            "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1"},
        }
        for p in sorted(patients)
    ]
    if what:
        entities.append({"what": {"reference": mask_candidates(what)}})
    elif data_type:  # a search or history of a type: which kind of data
        entities.append(
            {"type": {"system": "http://hl7.org/fhir/resource-types", "code": data_type}}
        )
    if query:
        entities.append(
            {
                "type": {
                    "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                    "code": "2",
                },
                "query": base64.b64encode(mask_candidates(query).encode()).decode(),
            }
        )
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": str(seq),
        "type": event_type or (LOGIN if login else REST),
        "action": action,
        "recorded": format_instant(recorded),
        "outcome": outcome_code(status),
        "outcomeDesc": str(status),
        "agent": _agents(caller),
        "source": {"observer": {"display": "ehr-service"}},
    }
    if not login and event_type is None:
        event["subtype"] = [{"system": "http://hl7.org/fhir/restful-interaction", "code": kind}]
    if entities:
        event["entity"] = entities
    return orjson.dumps(event)


class GroupCommit:
    """Events recorded in transactions of their own (reads, searches, failures),
    committed together: a caller waits until its event is on the chain, as before,
    but concurrent callers share one transaction. The first caller to find no
    commit under way writes everything queued by then; the rest wait for it, and
    one of those left queued writes the next group. No thread of its own."""

    def __init__(self, write: Callable[[list[NewEvent]], None]) -> None:
        self._write = write
        self._changed = threading.Condition()
        self._queue: list[_Queued] = []
        self._writing = False

    def submit(self, event: NewEvent) -> None:
        mine = _Queued(event)
        with self._changed:
            self._queue.append(mine)
            while self._writing and not mine.done:
                self._changed.wait()
            if not mine.done:
                self._writing = True
                group, self._queue = self._queue, []
        if not mine.done:
            error: BaseException | None = None
            try:
                self._write([q.event for q in group])
            except BaseException as exc:  # every caller of the group learns it
                error = exc
            with self._changed:
                for queued in group:
                    queued.done, queued.error = True, error
                self._writing = False
                self._changed.notify_all()
        if mine.error is not None:
            raise mine.error


@dataclass(slots=True)
class _Queued:
    event: NewEvent
    done: bool = False
    error: BaseException | None = None


class Auditor:
    """Records events on the chain; one per process."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self._group = GroupCommit(self._append_group)

    def new_event(
        self,
        *,
        interaction: str,
        status: int,
        caller: Caller,
        patients: frozenset[str],
        what: str | None = None,
        query: str | None = None,
        login: bool = False,
        data_type: str | None = None,
    ) -> NewEvent:
        kind, action = INTERACTIONS.get(interaction, (interaction or "operation", "E"))
        event_type = None
        if login:
            kind, action = "login", "E"
        elif interaction in EXCHANGE:
            event_type, action = EXCHANGE[interaction]
            kind = interaction.replace("_", "-")
        recorded = utc_now()

        def content(seq: int) -> bytes:
            return event_json(
                seq=seq,
                recorded=recorded,
                kind=kind,
                action=action,
                status=status,
                caller=caller,
                patients=patients,
                what=what,
                query=query,
                login=login,
                data_type=data_type,
                event_type=event_type,
            )

        return NewEvent(
            recorded,
            kind,
            outcome_code(status),
            caller.subject,
            caller.organization,
            patients,
            content,
            mask_candidates(what) if what else None,
        )

    def append(self, conn: Connection, event: NewEvent) -> None:
        audit_store.append(conn, [event])

    def for_result(self, ctx: RequestContext, result: Result) -> NewEvent:
        what = None
        if result.resource_type and result.resource_id:
            what = f"{result.resource_type}/{result.resource_id}"
        segments = [s for s in ctx.path.split("/") if s]
        data_type = segments[1] if len(segments) > 1 and segments[0] == "fhir" else None
        return self.new_event(
            interaction=ctx.interaction,
            status=result.status,
            caller=ctx.caller,
            patients=result.patients,
            what=what,
            query=ctx.query_string or None,
            data_type=data_type if data_type and data_type[:1].isupper() else None,
        )

    def record(self, conn: Connection, ctx: RequestContext, result: Result) -> None:
        """In the caller's transaction: a write and its audit commit together."""
        if not ctx.caller.internal:
            self.append(conn, self.for_result(ctx, result))

    def record_now(self, ctx: RequestContext, result: Result) -> None:
        if not ctx.caller.internal:
            self.append_now(self.for_result(ctx, result))

    def append_now(self, event: NewEvent) -> None:
        """In a transaction of its own (reads, failures, login failures), shared
        with the events of concurrent requests; returns once it is committed."""
        self._group.submit(event)

    def _append_group(self, events: list[NewEvent]) -> None:
        try:
            with self.database.write() as conn:
                audit_store.append(conn, events)
        except FhirError:  # the database is down: the request itself has failed too
            logger.error("audit event could not be recorded: database unavailable")
            raise
