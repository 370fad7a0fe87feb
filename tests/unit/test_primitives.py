from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from ehr_service.fhir.errors import FhirError
from ehr_service.fhir.primitives import (
    format_instant,
    http_date,
    new_id,
    parse_etag,
    parse_instant_param,
)
from ehr_service.fhir.references import is_valid_id


def test_new_ids_are_valid_unique_uuid7_and_time_ordered() -> None:
    ids = [new_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    assert all(is_valid_id(i) and uuid.UUID(i).version == 7 for i in ids)
    prefixes = [i[:13] for i in ids]  # the 48-bit millisecond prefix
    assert prefixes == sorted(prefixes)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024", datetime(2024, 1, 1, tzinfo=UTC)),
        ("2024-02-29", datetime(2024, 2, 29, tzinfo=UTC)),
        ("2024-02-29T10:11:12Z", datetime(2024, 2, 29, 10, 11, 12, tzinfo=UTC)),
        ("2024-02-29T10:11:12.5+08:00", datetime(2024, 2, 29, 2, 11, 12, 500000, tzinfo=UTC)),
        ("2024-01-01T00:00:00-05:30", datetime(2024, 1, 1, 5, 30, tzinfo=UTC)),
    ],
)
def test_parse_instant_param(text: str, expected: datetime) -> None:
    assert parse_instant_param(text, "_since") == expected


@pytest.mark.parametrize("text", ["", "yesterday", "2023-02-29", "2024-13-01", "2024-01-01T25:00"])
def test_parse_instant_param_rejects(text: str) -> None:
    with pytest.raises(FhirError) as caught:
        parse_instant_param(text, "_since")
    assert caught.value.status == 400


def test_instant_and_http_date_formats() -> None:
    moment = datetime(2026, 11, 28, 13, 5, 6, 789, tzinfo=UTC)
    assert format_instant(moment) == "2026-11-28T13:05:06.000789Z"
    assert http_date(moment) == "Sat, 28 Nov 2026 13:05:06 GMT"


def test_parse_etag() -> None:
    assert parse_etag('W/"12"') == 12
    assert parse_etag('"3"') == 3
    for bad in ("12", 'W/"x"', "W/", ""):
        with pytest.raises(FhirError):
            parse_etag(bad)
