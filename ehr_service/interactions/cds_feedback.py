"""``POST /cds-services/{id}/feedback`` (CDS Hooks 2.0 §Feedback): what the doctor did
with a recognition card becomes a decision, stored as ``$recognition-decision``
stores one (a Task in the resident's record and a fact of ``$recognition-stats``).

- ``accepted`` with the reuse suggestion: the prior result was recognised;
- ``accepted`` with a re-test suggestion: a re-test with that national reason;
- ``overridden``: a re-test, with the national reason of ``overrideReason.reason``
  (one of the card's ``overrideReasons``; "other" needs ``userComment``), or none.

Every entry is checked before anything is stored: one bad entry refuses the whole
request. Feedback on a card already answered the same way is a repeat (the spec
allows it): nothing new is stored; a different answer is a 409.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from ehr_service.fhir import jsonio
from ehr_service.fhir.errors import Category, FhirError
from ehr_service.fhir.primitives import parse_instant_param, utc_now
from ehr_service.interactions.cds_cards import SUGGESTION_SYSTEM, client_of
from ehr_service.interactions.cds_hooks import SERVICES, bad, unknown_service
from ehr_service.interactions.context import RequestContext
from ehr_service.interactions.recognition import (
    active_catalogue,
    decision_fact,
    decision_task,
    record_decision,
)
from ehr_service.interactions.results import Result
from ehr_service.recognition.rules import RETEST_REASONS, RETEST_SYSTEM
from ehr_service.security.policy import require_staff
from ehr_service.storage import cds as cds_store

MAX_ENTRIES = 100
MAX_COMMENT = 1000


@dataclass(frozen=True, slots=True)
class Answer:
    card: str
    outcome: str  # accepted | overridden
    suggestion: str | None  # the accepted suggestion's uuid
    reason: str | None  # of an override
    comment: str | None


def _answers(body: Any) -> list[Answer]:
    entries = body.get("feedback") if isinstance(body, dict) else None
    if not isinstance(entries, list) or not entries or len(entries) > MAX_ENTRIES:
        raise bad(f"The body must be {{'feedback': [...]}} with 1 to {MAX_ENTRIES} entries",
                  "feedback")  # fmt: skip
    answers = []
    for index, entry in enumerate(entries):
        where = f"feedback[{index}]"
        if not isinstance(entry, dict):
            raise bad("each feedback entry must be an object", where)
        card, outcome = entry.get("card"), entry.get("outcome")
        if not isinstance(card, str) or not card or len(card) > 64:
            raise bad("card is required: the card's uuid", f"{where}.card")
        if outcome not in ("accepted", "overridden"):
            raise bad("outcome must be 'accepted' or 'overridden'", f"{where}.outcome")
        moment = entry.get("outcomeTimestamp")
        if not isinstance(moment, str):
            raise bad("outcomeTimestamp is required (ISO 8601, UTC)", f"{where}.outcomeTimestamp")
        parse_instant_param(moment, f"{where}.outcomeTimestamp")
        suggestion = reason = comment = None
        if outcome == "accepted":
            accepted = entry.get("acceptedSuggestions")
            ids = [a.get("id") for a in accepted or () if isinstance(a, dict)] if isinstance(
                accepted, list) else []  # fmt: skip
            if len(ids) != 1 or not isinstance(ids[0], str) or len(accepted or ()) != 1:
                raise bad("accepted needs acceptedSuggestions: the one suggestion taken (the "
                          "card's selectionBehavior is at-most-one)",
                          f"{where}.acceptedSuggestions")  # fmt: skip
            suggestion = ids[0]
        else:
            reason, comment = _override(entry.get("overrideReason"), where)
        answers.append(Answer(card, outcome, suggestion, reason, comment))
    return answers


def _override(value: Any, where: str) -> tuple[str | None, str | None]:
    if value is None:
        return None, None
    where = f"{where}.overrideReason"
    if not isinstance(value, dict):
        raise bad("overrideReason must be an object (reason, userComment)", where)
    comment = value.get("userComment")
    if comment is not None and (not isinstance(comment, str) or len(comment) > MAX_COMMENT):
        raise bad(f"userComment must be a string of at most {MAX_COMMENT} characters",
                  f"{where}.userComment")  # fmt: skip
    coding = value.get("reason")
    reason = None
    if coding is not None:
        if (
            not isinstance(coding, dict)
            or coding.get("system") != RETEST_SYSTEM
            or coding.get("code") not in RETEST_REASONS
        ):
            raise bad("reason must be one of the card's overrideReasons (the national "
                      "re-test reasons)", f"{where}.reason")  # fmt: skip
        reason = str(coding["code"])
    if reason == "other" and not (comment and comment.strip()):
        raise bad("the reason 'other' needs userComment", f"{where}.userComment",
                  Category.UNPROCESSABLE)  # fmt: skip
    return reason, comment.strip() if comment and comment.strip() else None


def _decision(answer: Answer, row: dict[str, Any], where: str) -> str:
    if answer.outcome == "overridden":
        return f"retest:{answer.reason}" if answer.reason else "retest"
    decisions: dict[str, str] = jsonio.loads(row["suggestions"])
    if answer.suggestion not in decisions:
        raise bad("acceptedSuggestions names no suggestion of this card",
                  f"{where}.acceptedSuggestions")  # fmt: skip
    return decisions[str(answer.suggestion)]


def feedback(conn: Connection, ctx: RequestContext, service_id: str, body: Any) -> Result:
    if service_id not in SERVICES:
        raise unknown_service(service_id)
    require_staff(ctx.caller, "Task", "c")
    answers = _answers(body)
    rows = cds_store.cards(conn, [a.card for a in answers])
    client = client_of(ctx)
    plan = []
    for index, answer in enumerate(answers):
        where = f"feedback[{index}]"
        row = rows.get(answer.card)
        if row is None or row["service"] != service_id or row["client"] != client:
            raise bad(f"card {answer.card} is not a card {service_id} gave this client",
                      f"{where}.card")  # fmt: skip
        decision = _decision(answer, row, where)
        if row["outcome"] is not None:
            if (row["outcome"], row["decision"]) == (answer.outcome, decision):
                continue  # a repeat: already recorded
            raise FhirError.of(
                Category.CONFLICT,
                f"card {answer.card} was already answered ({row['outcome']}, {row['decision']})",
                code="duplicate", expression=[f"{where}.outcome"],
            )  # fmt: skip
        plan.append((answer, row, decision))
    catalogue = active_catalogue(ctx)
    org = ctx.caller.organization
    requester = (org if org.startswith("Organization/") else f"Organization/{org}") if org else None
    now = utc_now()
    recorded = 0
    for answer, row, decision in plan:
        item = catalogue.items.get(row["item"])
        if item is None:
            raise FhirError.of(Category.UNPROCESSABLE,
                               f"item {row['item']} is no longer in the active catalogue",
                               code="not-found")  # fmt: skip
        kind, _, reason = decision.partition(":")
        accepted = kind == "accepted"
        if not cds_store.answer(conn, answer.card, answer.outcome, decision, now):
            raise FhirError.of(Category.CONFLICT, f"card {answer.card} was answered meanwhile",
                               code="duplicate")  # fmt: skip
        marker = f"urn:uuid:{answer.suggestion or answer.card}"
        task: dict[str, Any] | None = decision_task(
            catalogue, item, kind, row["patient_id"], None, requester,
            row["result_ref"] if accepted else None, reason or None, answer.comment,
        )  # fmt: skip
        task = {**(task or {}), "identifier": [{"system": SUGGESTION_SYSTEM, "value": marker}]}
        if cds_store.task_with_identifier(conn, SUGGESTION_SYSTEM, marker):
            task = None  # the client created the suggestion's Task on this server already
        fact = decision_fact(kind, row["patient_id"], item,
                             row["institution"] if accepted else None,
                             row["region"] if accepted else None,
                             reason or None, key=f"cds|{answer.card}")  # fmt: skip
        if not record_decision(conn, ctx, task, fact)[0]:
            raise FhirError.of(Category.CONFLICT, f"card {answer.card} is already counted",
                               code="duplicate")  # fmt: skip
        recorded += 1
    patients = frozenset(row["patient_id"] for _, row, _ in plan)
    return Result(200, {"recorded": recorded}, patients=patients)
