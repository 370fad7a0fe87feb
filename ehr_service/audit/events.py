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
from typing import Any, Protocol

from sqlalchemy import Connection

from ehr_service.fhir import jsonio
from ehr_service.fhir.errors import FhirError
from ehr_service.fhir.primitives import format_instant, utc_now
from ehr_service.mpi.idnumber import mask_candidates
from ehr_service.security.caller import Caller
from ehr_service.storage import unit_of_work
from ehr_service.storage.audit import NewEvent
from ehr_service.storage.unit_of_work import UnitOfWork


class AuditedRequest(Protocol):
    """What an event says of the request (``interactions.context.RequestContext``)."""

    @property
    def caller(self) -> Caller: ...
    @property
    def interaction(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def query_string(self) -> str: ...


class AuditedResult(Protocol):
    """What an event says of the outcome (``interactions.results.Result``)."""

    @property
    def status(self) -> int: ...
    @property
    def resource_type(self) -> str | None: ...
    @property
    def resource_id(self) -> str | None: ...
    @property
    def patients(self) -> frozenset[str]: ...


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
# Signed exchanges (docs/architecture.md §8) are DICOM import/export events, not REST ones.
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
# Operator commands (``ehr-service ...``): DICOM Application Activity events whose
# subtype names the command; each records the writes it made.
OPERATOR = {
    "system": "http://dicom.nema.org/resources/ontology/DCM",
    "code": "110100",
    "display": "Application Activity",
}
OPERATOR_COMMAND_SYSTEM = "urn:ehr-service:operator-command"
KIND_LENGTH = 128  # the width of audit_event.kind
OPERATOR_COMMANDS: dict[str, str] = {  # command -> action
    "institution-add": "C",
    "institution-qc": "U",
    "catalogue-load": "U",
    "catalogue-remark": "U",
    "import": "C",
    "load": "C",
    "reindex": "U",
    "rotate-data-key": "U",
    "partner-add": "C",
    "partner-update": "U",
    "partner-key": "U",
    "partner-remove": "D",
    "exchange-retry": "U",
    "exchange-push": "E",
    "exchange-pull": "C",
    "export": "R",
    "merge": "U",
    "audit-archive": "E",
    "audit-guard": "U",
    "keys-generate": "C",
    "keys-rotate": "U",
    "keys-retire": "U",
    "keys-revoke": "U",
    "partner-token": "U",
    "token-mint": "C",
    "audit-seal": "U",
    "audit-verify": "E",
    "audit-proof": "R",
}
# Which of the three administrators (GB/T 22239-2019 level 3) an operator command is
# the act of; on the event as the requestor's second role, code of ADMIN_ROLE_SYSTEM.
ADMIN_ROLE_SYSTEM = "urn:ehr-service:admin-role"
SECURITY_COMMANDS = frozenset({
    "rotate-data-key", "partner-add", "partner-update", "partner-key", "partner-remove",
    "partner-token", "keys-generate", "keys-rotate", "keys-retire", "keys-revoke", "token-mint",
})  # fmt: skip
AUDIT_COMMANDS = frozenset({"audit-seal", "audit-verify", "audit-proof", "audit-archive",
                            "audit-guard"})  # fmt: skip


def command_role(command: str) -> str:
    """sysadmin | secadmin | auditadmin: the administrator an operator command is for."""
    if command in SECURITY_COMMANDS:
        return "secadmin"
    return "auditadmin" if command in AUDIT_COMMANDS else "sysadmin"


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
    "resolve_health_card": ("health-card-use", "E"),  # its own subtype, see new_event
    "bind_health_card": ("operation", "U"),
    "recognizable_results": ("operation", "E"),
    "recognition_decision": ("operation", "C"),
    "recognition_stats": ("operation", "E"),
    "validate_type": ("operation", "E"),
    "validate_instance": ("operation", "E"),
    "validate_stored": ("operation", "E"),
    "export_system": ("operation", "E"),
    "export_patients": ("operation", "E"),
    "export_group": ("operation", "E"),
    "export_system_post": ("operation", "E"),
    "export_patients_post": ("operation", "E"),
    "export_group_post": ("operation", "E"),
    "export_status": ("operation", "E"),
    "export_cancel": ("operation", "D"),
    "export_file": ("operation", "R"),
    "codesystem_lookup": ("operation", "E"),
    "codesystem_validate_code": ("operation", "E"),
    "codesystem_validate_code_instance": ("operation", "E"),
    "valueset_validate_code": ("operation", "E"),
    "valueset_validate_code_instance": ("operation", "E"),
    "valueset_expand": ("operation", "E"),
    "valueset_expand_instance": ("operation", "E"),
    "conceptmap_translate": ("operation", "E"),
    "conceptmap_translate_instance": ("operation", "E"),
    "audit_search": ("search-type", "E"),
    "audit_search_post": ("search-type", "E"),
    "audit_read": ("read", "R"),
    "audit_inclusion_proof": ("operation", "R"),
    "cds_service_call": ("operation", "E"),
    "cds_service_feedback": ("operation", "C"),
    "dashboard_recognition": ("operation", "E"),
    "dashboard_operations": ("operation", "E"),
}


# A use of a resident's e-health card (``Patient/$resolve-health-card``): its own
# subtype, the scene code in the event's query entity (``scene=<code>``).
HEALTH_CARD_USE = {"system": "urn:ehr-service:health-card", "code": "health-card-use"}


def outcome_code(status: int) -> str:
    """AuditEvent.outcome: 0 success, 4 minor failure (refused), 8 serious failure."""
    if status < 400:
        return "0"
    return "4" if status < 500 else "8"


def _agents(caller: Caller, admin_role: str | None = None) -> list[dict[str, Any]]:
    agent: dict[str, Any] = {
        "type": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/extra-security-role-type",
                    "code": "humanuser" if caller.kind in {"user", "patient"} else "dataprocessor",
                }
            ]
        },
        "role": [{"text": caller.kind}],  # patient | user | system | operator | anonymous
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
    if admin_role is not None:  # the administrator's duty the act belongs to
        agent["role"].append(
            {"coding": [{"system": ADMIN_ROLE_SYSTEM, "code": admin_role}], "text": admin_role}
        )
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
    subtype: dict[str, str] | None = None,
    admin_role: str | None = None,
    legal_basis: dict[str, str] | None = None,
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
        "agent": _agents(caller, admin_role),
        "source": {"observer": {"display": "ehr-service"}},
    }
    if legal_basis is not None:  # the lawful basis of a disclosure to another region
        event["purposeOfUse"] = [{"coding": [legal_basis]}]
    if subtype is not None:
        event["subtype"] = [subtype]
    elif not login and event_type is None:
        event["subtype"] = [{"system": "http://hl7.org/fhir/restful-interaction", "code": kind}]
    if entities:
        event["entity"] = entities
    return jsonio.dumps(event)


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

    def __init__(
        self,
        unit: UnitOfWork,
        legal_basis: dict[str, str] | None = None,
        home_region: str | None = None,
    ) -> None:
        self.unit = unit
        self._group = GroupCommit(self._append_group)
        # The lawful basis this deployment discloses to other regions on (its sharing
        # policy), recorded on every exchange and every other region's caller's access.
        self.legal_basis = legal_basis
        self.home_region = home_region

    def _basis(self, interaction: str, caller: Caller) -> dict[str, str] | None:
        if self.legal_basis is None:
            return None
        other_region = (
            caller.region is not None
            and caller.region != self.home_region
            and caller.patient is None
            and not caller.internal
        )
        return self.legal_basis if interaction in EXCHANGE or other_region else None

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
        legal_basis: dict[str, str] | None = None,
    ) -> NewEvent:
        kind, action = INTERACTIONS.get(interaction, (interaction or "operation", "E"))
        event_type = subtype = None
        admin_role = caller.admin_role
        if legal_basis is None:
            legal_basis = self._basis(interaction, caller)
        command = interaction.removeprefix("cli:")
        if command != interaction:
            event_type, action = OPERATOR, OPERATOR_COMMANDS.get(command, "E")
            kind, subtype = f"cli-{command}", {"system": OPERATOR_COMMAND_SYSTEM, "code": command}
            admin_role = command_role(command)
        elif interaction == "resolve_health_card":
            kind, subtype = HEALTH_CARD_USE["code"], HEALTH_CARD_USE
        elif login:
            kind, action = "login", "E"
        elif interaction in EXCHANGE:
            event_type, action = EXCHANGE[interaction]
            kind = interaction.replace("_", "-")
        kind = kind[:KIND_LENGTH]
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
                subtype=subtype,
                admin_role=admin_role,
                legal_basis=legal_basis,
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

    def for_result(
        self, ctx: AuditedRequest, result: AuditedResult, also: frozenset[str] = frozenset()
    ) -> NewEvent:
        """``also``: records the work changed beyond the result's own."""
        what = None
        if result.resource_type and result.resource_id:
            what = f"{result.resource_type}/{result.resource_id}"
        segments = [s for s in ctx.path.split("/") if s]
        data_type = segments[1] if len(segments) > 1 and segments[0] == "fhir" else None
        return self.new_event(
            interaction=ctx.interaction,
            status=result.status,
            caller=ctx.caller,
            patients=result.patients | also,
            what=what,
            query=ctx.query_string or None,
            data_type=data_type if data_type and data_type[:1].isupper() else None,
        )

    def record(self, conn: Connection, ctx: AuditedRequest, result: AuditedResult) -> None:
        """Into the unit of work of ``conn``: a write and its audit commit together
        (a read's event follows its transaction). The service's own internal work
        (demo data, background re-marking) is not a caller's act; an operator's is."""
        if ctx.caller.operator or not ctx.caller.internal:
            event = self.for_result(ctx, result, unit_of_work.touched(conn))
            unit_of_work.record(conn, event)

    def record_now(self, ctx: AuditedRequest, result: AuditedResult) -> None:
        """The event of work outside a transaction (a file download), in a unit of
        work of its own."""
        if ctx.caller.operator or not ctx.caller.internal:
            self.append_now(self.for_result(ctx, result))

    def operator_event(
        self,
        caller: Caller,
        command: str,
        what: str | None = None,
        patients: Iterable[str] = (),
        query: str | None = None,
    ) -> NewEvent:
        """The event of an operator command (``ehr-service <command>``)."""
        return self.new_event(
            interaction=f"cli:{command}",
            status=200,
            caller=caller,
            patients=frozenset(patients),
            what=what,
            query=query,
        )

    def append_now(self, event: NewEvent) -> None:
        """In a transaction of its own (reads, failures, login failures), shared
        with the events of concurrent requests; returns once it is committed."""
        self._group.submit(event)

    def append_all_now(self, events: Iterable[NewEvent]) -> None:
        for event in events:
            self._group.submit(event)

    def _append_group(self, events: list[NewEvent]) -> None:
        try:
            with self.unit.write(*events):
                pass
        except FhirError:  # the database is down: the request itself has failed too
            logger.error("audit event could not be recorded: database unavailable")
            raise


# -- the queryable columns of an event, as its hashed JSON says them (audit verify) ----
def acted_on(content: dict[str, Any]) -> str | None:
    """The resource acted on (``entity.what`` outside the patient role)."""
    for entity in content.get("entity") or ():
        if (entity.get("role") or {}).get("code") != "1" and "what" in entity:
            return str(entity["what"].get("reference"))
    return None


def organization_of(content: dict[str, Any]) -> str | None:
    for agent in (content.get("agent") or [])[1:]:
        if (agent.get("type") or {}).get("text") == "organization":
            who = agent.get("who") or {}
            return str(who.get("reference") or who.get("display"))
    return None


def kind_of(content: dict[str, Any], recorded_kind: str) -> str:
    """The kind column an event must have: its subtype's code (an operator's
    command as ``cli-<command>``), ``login``, or for exchanges the direction its
    DICOM type says (the recorded kind, if it is one of that direction)."""
    return _kind_of(content, recorded_kind)[:KIND_LENGTH]


def _kind_of(content: dict[str, Any], recorded_kind: str) -> str:
    subtypes = content.get("subtype") or []
    if subtypes:
        subtype = subtypes[0]
        command = str(subtype.get("code"))
        return f"cli-{command}" if subtype.get("system") == OPERATOR_COMMAND_SYSTEM else command
    code = str((content.get("type") or {}).get("code"))
    if code == LOGIN["code"]:
        return "login"
    directions = {IMPORT["code"]: ("exchange-receive", "exchange-pull"),
                  EXPORT["code"]: ("exchange-feed", "exchange-push")}  # fmt: skip
    allowed = directions.get(code, ())
    return recorded_kind if recorded_kind in allowed else f"({code})"
