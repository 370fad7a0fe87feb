"""Institutions (docs/architecture.md §7): Organization resources carrying their region,
level and quality-control records, as extensions:

- ``urn:ehr-service:extension:region`` (valueCode, e.g. ``chongqing``, ``sichuan``);
- ``urn:ehr-service:extension:institution-level`` (valueCode, e.g. ``3A``);
- ``urn:ehr-service:extension:quality-control`` (one per record), with parts
  ``category`` (valueCode, e.g. ``lab-chemistry``, ``imaging-CT``), ``scheme``
  (valueString), ``cycle`` (valueString), ``passed`` (valueBoolean) and ``valid``
  (valuePeriod).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

REGION_URL = "urn:ehr-service:extension:region"
LEVEL_URL = "urn:ehr-service:extension:institution-level"
QC_URL = "urn:ehr-service:extension:quality-control"


@dataclass(frozen=True, slots=True)
class QualityControl:
    category: str
    scheme: str | None
    cycle: str | None
    passed: bool
    start: date | None
    end: date | None

    def covers(self, category: str, day: date) -> bool:
        return (
            self.passed
            and self.category == category
            and (self.start is None or self.start <= day)
            and (self.end is None or day <= self.end)
        )


@dataclass(frozen=True, slots=True)
class Institution:
    reference: str
    name: str | None
    region: str | None
    level: str | None
    quality_control: tuple[QualityControl, ...]

    def passed(self, category: str, day: date) -> bool:
        """Had it passed quality control of ``category`` on ``day``?"""
        return any(qc.covers(category, day) for qc in self.quality_control)


def _date(value: Any) -> date | None:
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None


def _extensions(node: dict[str, Any], url: str) -> list[dict[str, Any]]:
    return [e for e in node.get("extension") or () if isinstance(e, dict) and e.get("url") == url]


def institution_of(reference: str, organization: dict[str, Any]) -> Institution:
    region = next((e.get("valueCode") for e in _extensions(organization, REGION_URL)), None)
    level = next((e.get("valueCode") for e in _extensions(organization, LEVEL_URL)), None)
    records = []
    for record in _extensions(organization, QC_URL):
        parts = {e.get("url"): e for e in record.get("extension") or () if isinstance(e, dict)}
        category = (parts.get("category") or {}).get("valueCode")
        if not isinstance(category, str):
            continue
        valid = (parts.get("valid") or {}).get("valuePeriod") or {}
        records.append(
            QualityControl(
                category,
                (parts.get("scheme") or {}).get("valueString"),
                (parts.get("cycle") or {}).get("valueString"),
                (parts.get("passed") or {}).get("valueBoolean") is True,
                _date(valid.get("start")),
                _date(valid.get("end")),
            )
        )
    name = organization.get("name")
    return Institution(
        reference,
        name if isinstance(name, str) else None,
        region if isinstance(region, str) else None,
        level if isinstance(level, str) else None,
        tuple(records),
    )


def quality_control_extension(
    category: str, scheme: str, cycle: str, passed: bool, start: str, end: str
) -> dict[str, Any]:
    return {
        "url": QC_URL,
        "extension": [
            {"url": "category", "valueCode": category},
            {"url": "scheme", "valueString": scheme},
            {"url": "cycle", "valueString": cycle},
            {"url": "passed", "valueBoolean": passed},
            {"url": "valid", "valuePeriod": {"start": start, "end": end}},
        ],
    }
