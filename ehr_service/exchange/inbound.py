"""Receiving a signed bundle from a partner region (docs/architecture.md §8).

Order of work: verify the envelope over the exact bytes, then authorise the
caller as that partner, then ingest everything in one transaction:

- the message row is claimed first; its primary key (issuer, jti) stops replays,
  and a retry of the same bytes gets the first answer back;
- each Patient of the bundle is matched to the local resident by ID number
  (blind index) or by another identifier (PIXm cross-reference); only a resident
  found neither way gets a new record, and the ID number's unique constraint
  keeps that to one;
- each other resource is stored under an id derived from (partner, type, source
  id), so a re-sent or amended result becomes a new version, never a duplicate;
- each gets a Provenance naming the partner, the message and its signature.

A refused message leaves nothing but its audit event.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from ehr_service.exchange import suites
from ehr_service.exchange.archive import Archive, Reply
from ehr_service.exchange.envelope import Envelope, EnvelopeError
from ehr_service.exchange.partners import Partner, PartnerRegistry
from ehr_service.fhir import jsonio
from ehr_service.fhir.errors import Category, FhirError, error_outcome
from ehr_service.fhir.primitives import format_instant, new_id, utc_now
from ehr_service.fhir.references import parse_reference
from ehr_service.interactions import conditional, update
from ehr_service.interactions.context import RequestContext
from ehr_service.interactions.create import created, prepare_create
from ehr_service.interactions.read import check_consent, no_permit
from ehr_service.interactions.results import Result, status_line
from ehr_service.interactions.writing import prepare_version
from ehr_service.mpi.idnumber import ID_NUMBER_SYSTEM
from ehr_service.recognition.catalogue import RESULT_TYPES
from ehr_service.security.caller import SERVICE, Caller
from ehr_service.security.consent import legal_basis
from ehr_service.security.policy import require
from ehr_service.storage import identity as identity_store
from ehr_service.storage import resources
from ehr_service.storage.unit_of_work import savepoint

PARTNER_SYSTEM = "urn:ehr-service:exchange-partner"
MESSAGE_SYSTEM = "urn:ehr-service:exchange-message"
SOURCE_SIGNATURE = {
    "system": "urn:iso-astm:E1762-95:2013",
    "code": "1.2.840.10065.1.12.1.14",
    "display": "Source Signature",
}
_NAMESPACE = uuid.UUID("6f1f7a8e-3d54-5d0c-9a51-2b8e8f0e4c11")
_BUNDLE_TYPES = {"collection", "transaction", "batch"}
_STATUS = {
    "malformed": 400,
    "algorithm": 403,
    "unknown-key": 403,
    "bad-signature": 403,
    "audience": 403,
    "target": 403,
    "future": 403,
    "expired": 403,
    "lifetime": 403,
    "suite": 403,
}


def refused(status: int, reason: str, message: str, code: str = "security") -> FhirError:
    category = {
        400: Category.INCORRECT,
        403: Category.FORBIDDEN,
        409: Category.CONFLICT,
        422: Category.UNPROCESSABLE,
    }[status]
    error = FhirError.of(category, f"{message} [{reason}]", code=code)
    return error


def local_id(partner_id: str, resource_type: str, source: str) -> str:
    """The id a partner's resource gets here: the same source, the same id."""
    return str(uuid.uuid5(_NAMESPACE, f"{partner_id}|{resource_type}|{source}"))


@dataclass(slots=True)
class _Item:
    index: int
    resource_type: str
    resource: dict[str, Any]
    source: str  # the partner's Type/id (or its fullUrl)
    keys: tuple[str, ...]  # how other entries may refer to it
    local: str | None = None  # the local Type/id
    result: Result | None = None
    matched: bool = False
    refusal: FhirError | None = None  # the resident refused the partner's region


class Inbound:
    """Receives messages for one process (built once by the app)."""

    def __init__(self, services: Any, partners: PartnerRegistry, archive: Archive) -> None:
        self.services = services
        self.partners = partners
        self.archive = archive

    # -- the steps ---------------------------------------------------------------------
    def verify(
        self, body: bytes, signatures: dict[str, str], htu: str, *, htm: str = "POST"
    ) -> tuple[Envelope, str]:
        """The verified envelope and signature set of a message: every suite this
        region and the sending partner share must have signed it."""
        if not signatures:
            raise refused(
                400,
                "malformed",
                f"The message needs an {suites.HEADER} or {suites.HEADER_SM2} header",
            )
        settings = self.services.settings
        try:
            return suites.verify_set(
                body,
                signatures,
                self.archive.suites_for(suites.issuer(signatures)),
                key_for=lambda iss, kid: self.partners.key(iss, kid, signing=True),
                audience=settings.exchange_id,
                htm=htm,
                htu=htu,
                skew=settings.exchange_clock_skew_seconds,
                sm2_id=self.archive.sm2_id,
            )
        except EnvelopeError as error:
            raise refused(_STATUS[error.reason], error.reason, str(error)) from None

    @staticmethod
    def authorise(caller: Caller, envelope: Envelope) -> None:
        """The bearer token must be the sending partner's own (a system token)."""
        if caller.kind != "system" or envelope.iss not in {caller.client_id, caller.subject}:
            raise refused(
                403, "caller", "The bearer token does not belong to the partner that signed"
            )

    def receive(
        self, ctx: RequestContext, body: bytes, signatures: dict[str, str], htu: str
    ) -> Reply:
        envelope, signature = self.verify(body, signatures, htu)
        self.authorise(ctx.caller, envelope)
        return self.ingest(ctx, envelope, body, signature, direction="in")

    def ingest(
        self,
        ctx: RequestContext,
        envelope: Envelope,
        body: bytes,
        signature: str,
        *,
        direction: str,
    ) -> Reply:
        """Store a verified message (pushed to us, or pulled from the partner's feed)."""
        partner = self.partners.get(envelope.iss)
        digest = hashlib.sha256(body).hexdigest()
        earlier = self.archive.earlier_reply(envelope, digest)
        if earlier is not None:
            return earlier
        items = _items(body, partner)
        pctx = replace(
            ctx,
            caller=replace(ctx.caller, region=partner.region, organization=None),
            from_partner=partner.partner_id,
        )
        sctx = replace(ctx, caller=SERVICE, from_partner=partner.partner_id)
        try:
            with self.services.unit.write() as conn:
                if not self.archive.claim(conn, envelope, body, signature, digest, direction):
                    raise _TakenError
                self._resolve_patients(conn, pctx, sctx, partner, items)
                self._store(conn, pctx, sctx, partner, envelope, signature, items)
                patients = Result.owners(*(p for i in items if i.result for p in i.result.patients))
                response = jsonio.dumps(_response(ctx, envelope, items))
                reply = self.archive.answer(conn, envelope, 200, response, signature=True)
                result = Result(200, response, patients=patients)
                ctx.services.auditor.record(conn, replace(pctx, path=ctx.path), result)
            return reply
        except _TakenError:
            # A concurrent or earlier delivery of the same jti committed first.
            earlier = self.archive.earlier_reply(envelope, digest)
            if earlier is None:  # pragma: no cover - the row was visible to the insert
                raise refused(409, "replay", "The message id is being processed; retry") from None
            return earlier

    # -- residents -------------------------------------------------------------------
    def _resolve_patients(
        self,
        conn: Connection,
        pctx: RequestContext,
        sctx: RequestContext,
        partner: Partner,
        items: list[_Item],
    ) -> None:
        """Match each carried Patient to the local resident, or create one record (never
        change an existing one). A resident who refused the partner's region is left
        out with a 403 entry, their results too; if that is every resident, the whole
        message is refused."""
        own_system = self.services.settings.record_number_system
        for item in items:
            if item.resource_type != "Patient":
                continue
            raw = item.resource.get("identifier")
            if raw is not None and not isinstance(raw, list):
                raise refused(
                    400,
                    "malformed",
                    f"Bundle.entry[{item.index}]: identifier must be a list",
                    code="structure",
                )
            identifiers = [
                i
                for i in raw or ()
                if isinstance(i, dict)
                and isinstance(i.get("system"), str)
                and isinstance(i.get("value"), str)
                and i["system"]
                and i["value"].strip()
                and i["system"] != own_system  # never ours: their numbers are not ours
            ]
            if not identifiers:
                raise refused(
                    422,
                    "unmatched",
                    f"Bundle.entry[{item.index}]: a Patient needs an identifier to be matched",
                    code="required",
                )
            found = self._match(conn, sctx, item, identifiers)
            patient_id = found or local_id(partner.partner_id, "Patient", item.source)
            if found is None and pctx.view.permit_actors:
                # consent-required: a resident unknown here cannot have consented here
                item.local, item.refusal = f"Patient/{patient_id}", no_permit(patient_id)
                item.refusal.patients = frozenset()  # no record here to show it in
                continue
            if found is None:
                body = _demographics(item.resource, identifiers) | {"id": patient_id}
                version = prepare_create(conn, sctx, "Patient", body, patient_id)
                if resources.insert_if_absent(conn, version):
                    item.local, item.result = f"Patient/{patient_id}", created(version)
                    continue
                found = patient_id  # made by an earlier message: a match, never an update
            item.local, item.matched = f"Patient/{found}", True
            item.result = Result(200, patients=frozenset({found}))
            try:
                check_consent(conn, pctx.view, found)  # the resident refused this region
            except FhirError as error:
                item.refusal = error
        refusals = [i for i in items if i.resource_type == "Patient" and i.refusal is not None]
        if refusals and len(refusals) == sum(1 for i in items if i.resource_type == "Patient"):
            raise refusals[0].refusal  # type: ignore[misc]

    @staticmethod
    def _match(
        conn: Connection, sctx: RequestContext, item: _Item, identifiers: list[dict[str, Any]]
    ) -> str | None:
        """By ID number first, then other identifiers (PIXm cross-reference); a match
        by another identifier whose record holds a different ID number is refused."""
        numbers = [i for i in identifiers if i["system"] == ID_NUMBER_SYSTEM]
        for identifier in numbers + [i for i in identifiers if i not in numbers]:
            criteria = {
                "identifier": [f"{_escape(identifier['system'])}|{_escape(identifier['value'])}"]
            }
            found = conditional.matching_ids(conn, sctx, "Patient", criteria, limit=2)
            if len(found) > 1:
                raise refused(
                    409,
                    "ambiguous",
                    f"Bundle.entry[{item.index}]: the identifier matches several residents",
                    code="multiple-matches",
                )
            if not found:
                continue
            # The ID number matched no one: a record found otherwise must not hold one.
            if (
                numbers
                and identifier not in numbers
                and identity_store.holds_number(conn, found[0])
            ):
                raise refused(
                    409,
                    "conflict",
                    f"Bundle.entry[{item.index}]: the resident "
                    "matched by identifier has another ID number",
                    code="conflict",
                )
            return found[0]
        return None

    # -- results ---------------------------------------------------------------------
    def _store(
        self,
        conn: Connection,
        pctx: RequestContext,
        sctx: RequestContext,
        partner: Partner,
        envelope: Envelope,
        signature: str,
        items: list[_Item],
    ) -> None:
        mapping = {key: i.local for i in items if i.local for key in i.keys}
        results = [i for i in items if i.resource_type != "Patient"]
        for item in results:
            item.local = (
                f"{item.resource_type}/"
                f"{local_id(partner.partner_id, item.resource_type, item.source)}"
            )
            mapping.update({key: item.local for key in item.keys})
        refusals = {i.local: i.refusal for i in items if i.refusal is not None and i.local}
        bodies = {}
        for item in results:
            assert item.local is not None
            body = _localised(item, mapping, partner)
            refusal = next((refusals[r] for r in _references(body) if r in refusals), None)
            if refusal is not None:  # of a resident who refused the partner's region
                item.refusal = refusal
                continue
            body["id"] = item.local.partition("/")[2]
            meta: dict[str, Any] = body["meta"] if isinstance(body.get("meta"), dict) else {}
            body["meta"] = {**meta, "source": f"urn:ehr-service:exchange:{partner.partner_id}"}
            bodies[item.index] = body
        results = [i for i in results if i.refusal is None]
        known = resources.existing(conn, [_key(i) for i in results])
        fresh = [i for i in results if _key(i) not in known]
        for item in sorted(results, key=lambda i: i.resource_type in RESULT_TYPES):
            if _key(item) in known:  # sent before: the next version (an amendment)
                self._update(conn, pctx, item, bodies[item.index])
        # Institutions first: a result's recognition mark reads its performer.
        self._create(conn, pctx, [i for i in fresh if i.resource_type not in RESULT_TYPES], bodies)
        self._create(conn, pctx, [i for i in fresh if i.resource_type in RESULT_TYPES], bodies)
        provenances = [
            prepare_create(conn, sctx, "Provenance", provenance, new_id())
            for provenance in _provenances(
                items,
                partner,
                envelope,
                signature,
                legal_basis(self.services.settings.sharing_policy),
            )
        ]
        resources.insert_new(conn, provenances)

    @staticmethod
    def _update(conn: Connection, pctx: RequestContext, item: _Item, body: dict[str, Any]) -> None:
        resource_type, _, resource_id = str(item.local).partition("/")
        try:
            item.result = update.update(conn, pctx, resource_type, resource_id, body)
        except FhirError as error:
            raise _located(item.index, error) from None

    def _create(
        self,
        conn: Connection,
        pctx: RequestContext,
        fresh: list[_Item],
        bodies: dict[int, dict[str, Any]],
    ) -> None:
        """New results in one batch (update-as-create rights); should a concurrent
        message have stored one of them first, one by one instead."""
        versions = []
        now = utc_now()
        for item in fresh:
            require(pctx.caller, item.resource_type, "u")
            require(pctx.caller, item.resource_type, "c")
            try:
                version, _ = prepare_version(
                    conn,
                    pctx,
                    bodies[item.index],
                    resource_type=item.resource_type,
                    resource_id=_key(item)[1],
                    version_id=1,
                    now=now,
                    method="PUT",
                )
            except FhirError as error:
                raise _located(item.index, error) from None
            versions.append(version)
        try:
            with savepoint(conn):
                resources.insert_new(conn, versions)
        except IntegrityError:
            for item in fresh:
                self._update(conn, pctx, item, bodies[item.index])
            return
        for item, version in zip(fresh, versions, strict=True):
            item.result = created(version)


class _TakenError(Exception):
    """The message's (issuer, jti) is already stored."""


_DEMOGRAPHICS = (
    "resourceType",
    "identifier",
    "active",
    "name",
    "telecom",
    "gender",
    "birthDate",
    "deceasedBoolean",
    "deceasedDateTime",
    "address",
    "maritalStatus",
    "multipleBirthBoolean",
    "multipleBirthInteger",
    "communication",
)


def _demographics(resource: dict[str, Any], identifiers: list[dict[str, Any]]) -> dict[str, Any]:
    """What a partner may tell us about a new resident: demographics only (no links,
    contacts, organisations or security labels of theirs), as a fresh copy."""
    body: dict[str, Any] = jsonio.loads(
        jsonio.dumps({k: v for k, v in resource.items() if k in _DEMOGRAPHICS})
    )
    body["identifier"] = jsonio.loads(jsonio.dumps(identifiers))
    return body


def _references(node: Any) -> Iterator[str]:
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, dict):
            if isinstance(current.get("reference"), str):
                yield current["reference"]
            stack.extend(v for v in current.values() if isinstance(v, dict | list))
        elif isinstance(current, list):
            stack.extend(v for v in current if isinstance(v, dict | list))


def _escape(value: str) -> str:
    """A token search value part, matched literally (R4 §3.1.1.4.14)."""
    for char in ("\\", ",", "|", "$"):
        value = value.replace(char, "\\" + char)
    return value


def _located(index: int, error: FhirError) -> FhirError:
    issues = tuple(
        replace(issue, diagnostics=f"Bundle.entry[{index}]: {issue.diagnostics}")
        for issue in error.issues
    )
    located = FhirError(error.category, issues, error.headers)
    located.patients = error.patients
    return located


def _items(body: bytes, partner: Partner) -> list[_Item]:
    try:
        bundle = jsonio.loads(body)
    except orjson.JSONDecodeError:
        raise refused(400, "malformed", "The message is not JSON", code="structure") from None
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise refused(400, "malformed", "The message must be a Bundle", code="structure")
    if not isinstance(bundle.get("type"), str) or bundle["type"] not in _BUNDLE_TYPES:
        raise refused(
            400, "malformed", "The Bundle type must be collection or transaction", code="value"
        )
    entries = bundle.get("entry") or []
    if not isinstance(entries, list) or not entries:
        raise refused(400, "malformed", "The Bundle carries no entries", code="required")
    items: list[_Item] = []
    for index, entry in enumerate(entries):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            raise refused(
                400, "malformed", f"Bundle.entry[{index}] carries no resource", code="required"
            )
        resource_type = resource["resourceType"]
        if resource_type != "Patient" and resource_type not in partner.allowed_types:
            raise refused(
                403,
                "type-not-allowed",
                f"Bundle.entry[{index}]: partner {partner.partner_id} may not send "
                f"{resource_type[:64]}",
            )
        full_url = entry.get("fullUrl") if isinstance(entry.get("fullUrl"), str) else None
        source_id = resource.get("id") if isinstance(resource.get("id"), str) else None
        if full_url is None and source_id is None:
            raise refused(
                400, "malformed", f"Bundle.entry[{index}] needs a fullUrl or an id", code="required"
            )
        keys = []
        if full_url:
            keys.append(full_url)
        if source_id:
            keys.append(f"{resource_type}/{source_id}")
        source = f"{resource_type}/{source_id}" if source_id else str(full_url)
        if _depth(resource) > MAX_DEPTH:
            raise refused(
                400, "malformed", f"Bundle.entry[{index}] is nested too deeply", code="structure"
            )
        if any(source == other.source or set(keys) & set(other.keys) for other in items):
            raise refused(
                400,
                "malformed",
                f"Bundle.entry[{index}] repeats another entry's resource",
                code="duplicate",
            )
        items.append(_Item(index, resource_type, resource, source, tuple(keys)))
    return items


MAX_DEPTH = 64


def _depth(node: Any) -> int:
    deepest, stack = 0, [(node, 1)]
    while stack:
        current, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > MAX_DEPTH:
            return deepest
        values = current.values() if isinstance(current, dict) else current
        stack.extend((v, depth + 1) for v in values if isinstance(v, dict | list))
    return deepest


def _localised(item: _Item, mapping: dict[str, str], partner: Partner) -> dict[str, Any]:
    """The resource with references into the bundle made local. A reference to
    something the bundle does not carry becomes a logical reference naming the
    partner's resource; a Patient must always be carried."""
    body: dict[str, Any] = jsonio.loads(jsonio.dumps(item.resource))
    stack: list[Any] = [body]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(v for v in node if isinstance(v, dict | list))
            continue
        if not isinstance(node, dict):
            continue
        reference = node.get("reference")
        if isinstance(reference, str):
            target = mapping.get(reference)
            # a search (Patient?identifier=...) or a placeholder the message does not define
            if target is None and ("?" in reference or reference.startswith("urn:")):
                raise refused(
                    400,
                    "reference",
                    f"Bundle.entry[{item.index}] has a reference the message does not resolve",
                    code="invalid",
                )
            if target is None:
                parsed = parse_reference(reference)
                if parsed is not None and parsed.resource_type == "Patient":
                    raise refused(
                        422,
                        "patient-not-carried",
                        f"Bundle.entry[{item.index}] refers to a Patient the message does not "
                        "carry",
                        code="not-found",
                    )
                if parsed is not None:  # theirs, relative or absolute: a logical reference
                    del node["reference"]
                    node.setdefault("type", parsed.resource_type)
                    node["identifier"] = {
                        "system": f"urn:ehr-service:exchange:{partner.partner_id}",
                        "value": reference if parsed.base else parsed.relative,
                    }
            else:
                node["reference"] = target
        stack.extend(v for v in node.values() if isinstance(v, dict | list))
    return body


def _key(item: _Item) -> tuple[str, str]:
    resource_type, _, resource_id = str(item.local).partition("/")
    return resource_type, resource_id


def _provenances(
    items: list[_Item], partner: Partner, envelope: Envelope, signature: str, basis: dict[str, str]
) -> list[dict[str, Any]]:
    """One Provenance per resident and message, naming every resource the message
    created or changed in that resident's record (Provenance.target is 1..*)."""
    groups: dict[str, list[_Item]] = {}
    for item in items:
        if item.matched or item.result is None or item.refusal is not None:
            continue
        owner = next(iter(sorted(item.result.patients)), "")
        groups.setdefault(owner, []).append(item)
    return [
        _provenance(group, owner, partner, envelope, signature, basis)
        for owner, group in groups.items()
    ]


def _provenance(
    group: list[_Item],
    owner: str,
    partner: Partner,
    envelope: Envelope,
    signature: str,
    basis: dict[str, str],
) -> dict[str, Any]:
    who = {
        "identifier": {"system": PARTNER_SYSTEM, "value": partner.partner_id},
        "display": partner.name,
    }
    targets = []
    for item in group:
        assert item.result is not None
        targets.append({"reference": f"{item.local}/_history/{item.result.version_id}"})
    if owner and all(item.resource_type != "Patient" for item in group):
        targets.append({"reference": f"Patient/{owner}"})  # in the resident's record
    created_all = all(item.result is not None and item.result.status == 201 for item in group)
    sources = [
        {
            "role": "source",
            "what": {
                "type": item.resource_type,
                "identifier": {
                    "system": f"urn:ehr-service:exchange:{partner.partner_id}",
                    "value": item.source,
                },
            },
        }
        for item in group
    ]
    return {
        "resourceType": "Provenance",
        "target": targets,
        "recorded": format_instant(utc_now()),
        "reason": [{"coding": [basis]}],  # the lawful basis it was received on
        "activity": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation",
                    "code": "CREATE" if created_all else "UPDATE",
                }
            ]
        },
        "agent": [
            {
                "type": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/"
                            "provenance-participant-type",
                            "code": "author",
                        }
                    ]
                },
                "who": who,
            }
        ],
        "entity": [
            {
                "role": "source",
                "what": {
                    "identifier": {
                        "system": MESSAGE_SYSTEM,
                        "value": f"{envelope.iss}/{envelope.jti}",
                    },
                    "display": "signed exchange message",
                },
            },
            *sources,
        ],
        "signature": [  # one per suite: each JWS verifies alone
            {
                "type": [SOURCE_SIGNATURE],
                "when": format_instant(datetime.fromtimestamp(envelope.iat, UTC)),
                "who": who,
                "targetFormat": "application/fhir+json",
                "sigFormat": "application/jose",
                "data": base64.b64encode(jws.encode()).decode(),
            }
            for jws in signature.split(" ")
        ],
    }


def _response(ctx: RequestContext, envelope: Envelope, items: list[_Item]) -> dict[str, Any]:
    entries: list[dict[str, Any]] = []
    for item in items:
        if item.refusal is not None:  # the resident refused the partner's region
            entries.append(
                {
                    "response": {
                        "status": status_line(item.refusal.status),
                        "outcome": error_outcome(item.refusal),
                    }
                }
            )
            continue
        assert item.result is not None and item.local is not None
        response: dict[str, Any] = {"status": status_line(item.result.status)}
        if item.result.version_id is not None:
            response["location"] = f"{item.local}/_history/{item.result.version_id}"
            response["etag"] = f'W/"{item.result.version_id}"'
        else:
            response["location"] = item.local
        entries.append({"fullUrl": f"{ctx.base_url}/{item.local}", "response": response})
    return {
        "resourceType": "Bundle",
        "id": new_id(),
        "identifier": {"system": MESSAGE_SYSTEM, "value": f"{envelope.iss}/{envelope.jti}"},
        "meta": {"lastUpdated": format_instant(utc_now())},
        "type": "transaction-response",
        "entry": entries,
    }
