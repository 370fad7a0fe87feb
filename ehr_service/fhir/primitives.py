"""FHIR primitive values the REST layer produces and parses: ids, instants, ETags."""

from __future__ import annotations

import os
import re
import time
import uuid
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from ehr_service.fhir.errors import Category, FhirError

_DATE_TIME = re.compile(
    r"(?P<year>\d{4})(?:-(?P<month>\d{2})(?:-(?P<day>\d{2})"
    r"(?:T(?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?:\.(?P<fraction>\d{1,9}))?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?"
)
_ETAG = re.compile(r'\s*(?:W/)?"(?P<version>[A-Za-z0-9\-.]{1,64})"\s*')


def new_id() -> str:
    """A server-assigned logical id: a UUID whose first 48 bits are the time in ms.

    Time-ordered ids keep B-tree inserts local (UUIDv7 layout, RFC 9562).
    """
    millis = time.time_ns() // 1_000_000
    value = (millis << 80) | int.from_bytes(os.urandom(10), "big")
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    return str(uuid.UUID(int=value))


def utc_now() -> datetime:
    return datetime.now(UTC)


def format_instant(moment: datetime) -> str:
    """An R4 ``instant`` in UTC with microseconds, e.g. ``2026-11-28T10:00:00.123456Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def http_date(moment: datetime) -> str:
    """RFC 9110 HTTP-date for ``Last-Modified``."""
    return format_datetime(moment.astimezone(UTC).replace(microsecond=0), usegmt=True)


def parse_instant_param(value: str, name: str) -> datetime:
    """Parse a date/dateTime/instant search value to the earliest moment it denotes.

    A value without a time zone is taken as UTC; an unparseable one is a 400.
    """
    match = _DATE_TIME.fullmatch(value.strip())
    if match is None:
        raise FhirError.of(
            Category.INCORRECT, f"{name}: '{value[:40]}' is not a valid instant", code="value"
        )
    try:
        parts = match.groupdict()
        fraction = (parts["fraction"] or "0")[:6].ljust(6, "0")
        moment = datetime(
            int(parts["year"]),
            int(parts["month"] or 1),
            int(parts["day"] or 1),
            int(parts["hour"] or 0),
            int(parts["minute"] or 0),
            int(parts["second"] or 0),
            int(fraction),
            tzinfo=UTC,
        )
    except ValueError:
        raise FhirError.of(
            Category.INCORRECT, f"{name}: '{value[:40]}' is not a valid instant", code="value"
        ) from None
    tz = parts["tz"]
    if tz and tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        offset = timedelta(hours=int(tz[1:3]), minutes=int(tz[4:6]))
        if offset > timedelta(hours=14):
            raise FhirError.of(
                Category.INCORRECT, f"{name}: time zone '{tz}' is out of range", code="value"
            )
        try:
            moment -= sign * offset
        except OverflowError:  # year 1 moved before the calendar starts, or 9999 past it
            moment = (
                datetime.min.replace(tzinfo=UTC) if sign > 0 else datetime.max.replace(tzinfo=UTC)
            )
    return moment


def etag(version_id: int) -> str:
    return f'W/"{version_id}"'


def parse_etag(value: str, header: str = "If-Match") -> int:
    """The version number in ``W/"3"`` or ``"3"``; anything else is a 400."""
    match = _ETAG.fullmatch(value)
    if match is None or not match["version"].isdigit():
        raise FhirError.of(
            Category.INCORRECT, f'{header} must look like W/"<versionId>"', code="value"
        )
    return int(match["version"])


def date_range(value: str) -> tuple[datetime, datetime] | None:
    """The instants a FHIR date/dateTime/instant covers: ``2024-02`` is all of
    February (R4 §3.1.1.5.6, implicit precision). None if unparseable."""
    match = _DATE_TIME.fullmatch(value.strip())
    if match is None:
        return None
    try:
        low = parse_instant_param(value, "date")
    except FhirError:
        return None
    try:
        return low, _range_end(low, match.groupdict())
    except (OverflowError, ValueError):  # the end of year 9999
        return low, datetime.max.replace(tzinfo=UTC)


def _range_end(low: datetime, parts: dict[str, str | None]) -> datetime:
    if parts["fraction"] is not None:
        digits = len(parts["fraction"])
        step = timedelta(microseconds=10 ** max(0, 6 - digits)) if digits < 6 else None
        high = low + step - _TICK if step else low
    elif parts["second"] is not None:
        high = low + timedelta(seconds=1) - _TICK
    elif parts["minute"] is not None:
        high = low + timedelta(minutes=1) - _TICK
    elif parts["day"] is not None:
        high = low + timedelta(days=1) - _TICK
    elif parts["month"] is not None:
        year, month = low.year + (low.month // 12), low.month % 12 + 1
        high = low.replace(year=year, month=month) - _TICK
    else:
        high = low.replace(year=low.year + 1) - _TICK
    return high


_TICK = timedelta(microseconds=1)
