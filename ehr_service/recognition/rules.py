"""The recognition rules (docs/architecture.md §7, after the national 2022 measures): a prior
result is recognisable when its item is in the catalogue, it is final, the
performing institution had passed quality control for the item's category on the
result's date, it is within the item's validity window, the resident has not
refused its use, and no newer result of the same item supersedes it.

Dates are calendar days in China Standard Time (UTC+8, no daylight saving): a
result of day D with a window of N days is recognisable through day D+N and
stops being recognisable on day D+N+1.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

from ehr_service.recognition.catalogue import Item
from ehr_service.recognition.institutions import Institution

CST = timezone(timedelta(hours=8))
REASON_SYSTEM = "urn:ehr-service:recognition-not-recognizable"
REASONS = {
    "not-in-catalogue": "The result is not of a catalogue item",
    "not-final": "The result is not final",
    "institution-not-quality-controlled": "The institution had not passed quality control "
    "for this category on the result's date",
    "expired": "The result is outside the item's validity window",
    "consent-refused": "The resident has refused this use of the result",
    "superseded": "A newer result of the same item supersedes it",
}
RETEST_SYSTEM = "urn:ehr-service:recognition-retest-reason"
RETEST_REASONS = {
    "condition-changed": "The patient's condition has changed",
    "rapid-change": "The value changes quickly with the course of the disease",
    "critical-decision": "A critical decision (e.g. surgery, transfusion) needs a new result",
    "emergency": "Emergency or critical care",
    "forensic-assessment": "Forensic, disability or retirement assessment",
    "other": "Other (stated in text)",
}
FINAL = frozenset({"final", "amended", "corrected"})


def local_day(moment: datetime) -> date:
    try:
        return moment.astimezone(CST).date()
    except OverflowError:  # the first or last representable day (year 1 or 9999)
        return moment.date()


def result_date(resource_type: str, resource: dict[str, Any]) -> date | None:
    """The day a result was produced: effective[x] (or started), else issued."""
    if resource_type == "ImagingStudy":
        values = [resource.get("started")]
    else:
        period = resource.get("effectivePeriod") or {}
        values = [
            resource.get("effectiveDateTime"),
            resource.get("effectiveInstant"),
            period.get("start") if isinstance(period, dict) else None,
            resource.get("issued"),
        ]
    for value in values:
        day = parse_day(value) if isinstance(value, str) and value else None
        if day is not None:  # a partial date ("2026-03") names no day: try the next
            return day
    return None


def parse_day(value: str) -> date | None:
    """A FHIR date or dateTime as a day in CST (a bare date is taken as it is)."""
    try:
        if len(value) <= 10:
            return date.fromisoformat(value) if len(value) == 10 else None
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=CST)
    return local_day(moment)


def is_final(resource_type: str, resource: dict[str, Any]) -> bool:
    status = resource.get("status")
    return status == "available" if resource_type == "ImagingStudy" else status in FINAL


@dataclass(frozen=True, slots=True)
class Candidate:
    reference: str  # Type/id
    resource_type: str
    item: Item | None
    institution: Institution | None
    region: str | None
    day: date | None
    final: bool
    consent_refused: bool = False


@dataclass(frozen=True, slots=True)
class Assessment:
    recognizable: bool
    reasons: tuple[str, ...]
    expires_on: date | None  # the first day it is no longer recognisable


def assess(candidate: Candidate, as_of: date, *, superseded: bool = False) -> Assessment:
    reasons = []
    item = candidate.item
    expires_on = None
    if item is None:
        reasons.append("not-in-catalogue")
    if not candidate.final:
        reasons.append("not-final")
    if item is not None:
        if candidate.day is None:
            reasons.append("expired")  # no date: no window can be established
        else:
            try:
                expires_on = candidate.day + timedelta(days=item.validity_days + 1)
            except OverflowError:  # beyond the calendar: it never stops in this one
                expires_on = None
            if expires_on is not None and as_of >= expires_on:
                reasons.append("expired")
            institution = candidate.institution
            if institution is None or not institution.passed(item.qc_category, candidate.day):
                reasons.append("institution-not-quality-controlled")
    if candidate.consent_refused:
        reasons.append("consent-refused")
    if superseded:
        reasons.append("superseded")
    return Assessment(not reasons, tuple(reasons), expires_on)
