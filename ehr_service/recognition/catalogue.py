"""The catalogue of recognised items (docs/architecture.md §7): data, versioned by edition.

An edition is a FHIR CodeSystem (its concepts are the items, with properties
``category``, ``loinc``, ``modality``, ``bodySite``, ``validityDays``,
``qcCategory``, ``price``, ``serviceItem`` (repeatable: the national medical-service
price item codes, 全国医疗服务价格项目规范; one code may cover several items) and
zh/en designations) and optionally a ConceptMap
from LOINC and local codes to items, usually together in a collection Bundle
(``fhir_profiles/recognition/catalogue-2024.json``). ``ehr-service catalogue load
FILE`` stores an edition and makes it the active one: no code changes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Connection

from ehr_service.fhir import jsonio
from ehr_service.fhir.primitives import utc_now
from ehr_service.storage import recognition as store
from ehr_service.storage.unit_of_work import UnitOfWork

SHIPPED = "recognition/catalogue-2024.json"
CATALOGUE_URL = "urn:ehr-service:recognition-item"
SERVICE_ITEM_SYSTEM = "urn:ehr-service:national-service-item"
SERVICE_ITEM_CHARS = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-.")
MAX_VALIDITY_DAYS = 36_500
RESULT_TYPES = ("Observation", "DiagnosticReport", "ImagingStudy")
REFRESH_SECONDS = 2.0


class CatalogueError(ValueError):
    """A catalogue file that cannot be loaded."""


@dataclass(frozen=True, slots=True)
class Item:
    code: str
    category: str  # laboratory | imaging
    name_zh: str
    name_en: str
    loinc: str | None
    modality: str | None
    body_site: str | None
    validity_days: int
    qc_category: str
    price: float
    service_items: tuple[str, ...] = ()  # national medical-service price item codes


@dataclass(frozen=True, slots=True)
class Catalogue:
    edition: str
    url: str
    items: dict[str, Item]
    codes: dict[tuple[str, str], str] = field(default_factory=dict)  # (system, code) -> item
    imaging: dict[tuple[str, str], str] = field(default_factory=dict)  # (modality, site) -> item
    services: dict[str, tuple[str, ...]] = field(default_factory=dict)  # national code -> items

    @classmethod
    def of(
        cls,
        edition: dict[str, Any],
        items: list[dict[str, Any]],
        codes: list[dict[str, Any]],
        services: Sequence[tuple[str, str]] = (),
    ) -> Catalogue:
        """``services``: (national code, item) pairs as stored; an item row read from
        a file carries its own as ``service_items``."""
        pairs = [*services, *((c, r["code"]) for r in items for c in r.get("service_items", ()))]
        national: dict[str, list[str]] = {}
        for code, item_code in sorted(set(pairs)):
            national.setdefault(code, []).append(item_code)
        own: dict[str, list[str]] = {}
        for code, item_codes in national.items():
            for item_code in item_codes:
                own.setdefault(item_code, []).append(code)
        by_code = {
            row["code"]: Item(
                row["code"], row["category"], row["name_zh"], row["name_en"], row["loinc"],
                row["modality"], row["body_site"], int(row["validity_days"]),
                row["qc_category"], float(row["price"]), tuple(own.get(row["code"], ())),
            )
            for row in items
        }  # fmt: skip
        mapping = {(c["system"], c["code"]): c["item"] for c in codes if c["item"] in by_code}
        url = edition["url"]
        for item in by_code.values():
            mapping.setdefault((url, item.code), item.code)
            if item.loinc:
                mapping.setdefault(("http://loinc.org", item.loinc), item.code)
        imaging = {
            (i.modality, i.body_site): i.code
            for i in by_code.values()
            if i.modality and i.body_site
        }
        covered = {
            code: tuple(i for i in item_codes if i in by_code)
            for code, item_codes in national.items()
        }
        return cls(edition["edition"], url, by_code, mapping, imaging, covered)

    def item_of_coding(self, system: Any, code: Any) -> Item | None:
        """The one item a coding names (a national service item code names a set of
        items: ``items_of_coding``)."""
        found = self.codes.get((str(system), str(code)))
        return self.items.get(found) if found else None

    def items_of_coding(self, system: Any, code: Any) -> list[Item]:
        """Every item a coding names: for a national service item code each item it
        covers, otherwise the one item (or none)."""
        if str(system) == SERVICE_ITEM_SYSTEM:
            return [self.items[i] for i in self.services.get(str(code), ())]
        item = self.item_of_coding(system, code)
        return [item] if item is not None else []

    def item_for(self, resource_type: str, resource: dict[str, Any]) -> Item | None:
        """The catalogue item a result is of (by its codes, or for imaging studies
        by modality and body site), None when it is of none."""
        for coding in _codings(resource.get("code")):
            item = self.item_of_coding(coding.get("system"), coding.get("code"))
            if item is not None:
                return item
        if resource_type == "ImagingStudy":
            for concept in resource.get("procedureCode") or ():
                for coding in _codings(concept):
                    item = self.item_of_coding(coding.get("system"), coding.get("code"))
                    if item is not None:
                        return item
            modalities = [
                m.get("code") for m in resource.get("modality") or () if isinstance(m, dict)
            ]
            for series in resource.get("series") or ():
                if not isinstance(series, dict):
                    continue
                modality = (series.get("modality") or {}).get("code")
                site = (series.get("bodySite") or {}).get("code")
                for candidate in [modality, *modalities]:
                    code = self.imaging.get((str(candidate), str(site)))
                    if code is not None:
                        return self.items[code]
        return None


def _codings(concept: Any) -> list[dict[str, Any]]:
    if not isinstance(concept, dict):
        return []
    return [c for c in concept.get("coding") or () if isinstance(c, dict)]


# -- reading an edition file -----------------------------------------------------------
def _property(concept: dict[str, Any], name: str) -> Any:
    for prop in concept.get("property") or ():
        if isinstance(prop, dict) and prop.get("code") == name:
            for key, value in prop.items():
                if key.startswith("value"):
                    return value
    return None


def _service_items(concept: dict[str, Any], code: str) -> list[str]:
    """The item's ``serviceItem`` properties (valueCode or valueString, repeatable)."""
    found = []
    for prop in concept.get("property") or ():
        if not isinstance(prop, dict) or prop.get("code") != "serviceItem":
            continue
        value = prop.get("valueCode", prop.get("valueString"))
        if (
            not isinstance(value, str)
            or not 0 < len(value) <= 32
            or not set(value) <= SERVICE_ITEM_CHARS
        ):
            raise CatalogueError(
                f"item {code}: serviceItem must be a valueCode of up to 32 letters, digits, - or ."
            )
        found.append(value)
    return list(dict.fromkeys(found))


def _designation(concept: dict[str, Any], language: str) -> str | None:
    for designation in concept.get("designation") or ():
        if isinstance(designation, dict) and str(designation.get("language", "")).startswith(
            language
        ):
            return str(designation.get("value"))
    return None


def parse_edition(
    document: Any,
) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(edition row, item rows, code-map rows, the FHIR resources) of a catalogue file:
    a CodeSystem, or a Bundle with a CodeSystem and ConceptMaps."""
    resources = (
        [e.get("resource") for e in document.get("entry") or () if isinstance(e, dict)]
        if isinstance(document, dict) and document.get("resourceType") == "Bundle"
        else [document]
    )
    systems = [
        r for r in resources if isinstance(r, dict) and r.get("resourceType") == "CodeSystem"
    ]
    maps = [r for r in resources if isinstance(r, dict) and r.get("resourceType") == "ConceptMap"]
    if len(systems) != 1:
        raise CatalogueError("a catalogue holds exactly one CodeSystem")
    codesystem = systems[0]
    edition, url = codesystem.get("version"), codesystem.get("url")
    if not isinstance(edition, str) or not edition or len(edition) > 32:
        raise CatalogueError("the CodeSystem needs a version (the edition, up to 32 characters)")
    if url != CATALOGUE_URL:  # editions are versions of one code system (profiles bind to it)
        raise CatalogueError(f"the CodeSystem url must be {CATALOGUE_URL}")
    items = []
    for concept in codesystem.get("concept") or ():
        code = concept.get("code") if isinstance(concept, dict) else None
        category = _property(concept, "category") if code else None
        days = _property(concept, "validityDays") if code else None
        qc = _property(concept, "qcCategory") if code else None
        if not isinstance(code, str) or category not in ("laboratory", "imaging"):
            raise CatalogueError(f"item {code!r}: category must be laboratory or imaging")
        if (
            not isinstance(days, int)
            or not 0 <= days <= MAX_VALIDITY_DAYS
            or not isinstance(qc, str)
        ):
            raise CatalogueError(
                f"item {code}: validityDays (0..{MAX_VALIDITY_DAYS}) and qcCategory are required"
            )
        price = _property(concept, "price")
        if price is not None and (
            isinstance(price, bool) or not isinstance(price, int | float | Decimal)
        ):
            raise CatalogueError(f"item {code}: price must be a number")
        en = _designation(concept, "en") or str(concept.get("display") or code)
        items.append(
            {
                "code": code,
                "category": category,
                "name_zh": _designation(concept, "zh") or en,
                "name_en": en,
                "loinc": _property(concept, "loinc"),
                "modality": _property(concept, "modality"),
                "body_site": _property(concept, "bodySite"),
                "validity_days": days,
                "qc_category": qc,
                "price": float(price or 0),
                "service_items": _service_items(concept, code),
            }
        )
    if len({i["code"] for i in items}) != len(items) or not items:
        raise CatalogueError("item codes must be present and unique")
    known = {i["code"] for i in items}
    codes: dict[tuple[str, str], dict[str, Any]] = {}
    for conceptmap in maps:
        for group in conceptmap.get("group") or ():
            source = group.get("source") if isinstance(group, dict) else None
            for element in (group or {}).get("element") or ():
                targets = [
                    t.get("code") for t in element.get("target") or () if isinstance(t, dict)
                ]
                target = next((t for t in targets if t in known), None)
                if isinstance(source, str) and isinstance(element.get("code"), str) and target:
                    key = (source, element["code"])
                    codes[key] = {"system": source, "code": element["code"], "item": target}
    row = {"edition": edition, "url": url, "items": len(items), "loaded": utc_now()}
    return row, items, list(codes.values()), [r for r in (codesystem, *maps)]


class Catalogues:
    """The active edition, cached per process (an edition switch by another process
    is seen within a few seconds)."""

    def __init__(self, unit: UnitOfWork, shipped: Path) -> None:
        self.unit = unit
        self.shipped = shipped
        self._lock = threading.Lock()
        self._active: Catalogue | None = None
        self._key: tuple[str, Any] | None = None
        self._checked = 0.0

    def load(self, document: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Store an edition and activate it; returns its row and FHIR resources."""
        with self.unit.write() as conn:
            return self.store(conn, document)

    def store(self, conn: Connection, document: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The same inside the caller's transaction."""
        row, items, codes, resources = parse_edition(document)
        services = [{"code": c, "item": i["code"]} for i in items for c in i["service_items"]]
        rows = [{k: v for k, v in i.items() if k != "service_items"} for i in items]
        store.replace_edition(conn, row, rows, codes, services)
        self._checked = 0.0
        self._key = None
        return row, resources

    def load_file(self, path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        try:
            document = jsonio.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise CatalogueError(f"{path.name}: {exc}") from None
        return self.load(document)

    def ensure_loaded(self) -> None:
        """First start: the shipped edition, unless one is loaded."""
        with self.unit.read() as conn:
            present = store.active_edition(conn)
        if present is None and self.shipped.exists():
            self.load_file(self.shipped)

    def active(self) -> Catalogue | None:
        now = time.monotonic()
        if self._checked and now - self._checked < REFRESH_SECONDS:  # None is cached too
            return self._active
        with self._lock:
            with self.unit.read() as conn:
                edition = store.active_edition(conn)
                key = (edition["edition"], edition["loaded"]) if edition else None
                if key != self._key:
                    self._active = (
                        Catalogue.of(
                            edition,
                            store.edition_items(conn, edition["edition"]),
                            store.edition_codes(conn, edition["edition"]),
                            store.edition_service_items(conn, edition["edition"]),
                        )
                        if edition
                        else None
                    )
                    self._key = key
            self._checked = now
            return self._active
