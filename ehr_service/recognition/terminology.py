"""The recognition catalogue as FHIR terminology (R4 §4.7 CodeSystem, §4.9
ValueSet, §4.10 ConceptMap, and their operations), answered from the active
edition: ``$lookup``, ``$validate-code``, ``$expand`` and ``$translate``.

The edition's CodeSystem and ConceptMap are the ones of its file; beside them
one ValueSet per category (laboratory, imaging) and one of every item, each
naming the edition as its version. They are published from the first start and
replaced in the transaction that switches editions. Also: the value-set resolver
the profile validator asks whether a coding is an item of the active edition.
"""

from __future__ import annotations

from typing import Any

from ehr_service.fhir.primitives import format_instant, utc_now
from ehr_service.fhir.profiles import Resolver
from ehr_service.recognition.catalogue import SERVICE_ITEM_SYSTEM, Catalogue, Catalogues, Item

CATEGORIES = ("laboratory", "imaging")
VALUESET_URL = "urn:ehr-service:ValueSet/recognition-items"
MAP_URL = "urn:ehr-service:recognition-item-map"
MAX_EXPANSION = 1000


def catalogue_resolver(catalogues: Catalogues | None) -> Resolver:
    def resolve(
        vs_system: str, system: str, code: str, filters: tuple[tuple[str, str], ...]
    ) -> bool:
        catalogue = catalogues.active() if catalogues is not None else None
        if catalogue is None or vs_system != catalogue.url:
            return False
        item = catalogue.item_of_coding(system, code)
        if item is None:
            return False
        return all(name != "category" or item.category == value for name, value in filters)

    return resolve


def valueset_url(category: str | None) -> str:
    return f"{VALUESET_URL}-{category}" if category else VALUESET_URL


def category_of_valueset(url: str) -> tuple[bool, str | None]:
    """(whether ``url`` is one of the catalogue's value sets, its category)."""
    if url == VALUESET_URL:
        return True, None
    for category in CATEGORIES:
        if url == valueset_url(category):
            return True, category
    return False, None


def valuesets(catalogue: Catalogue) -> list[dict[str, Any]]:
    """The catalogue's ValueSets: every item, and the items of each category."""
    out = []
    for category in (None, *CATEGORIES):
        include: dict[str, Any] = {"system": catalogue.url, "version": catalogue.edition}
        if category:
            include["filter"] = [{"property": "category", "op": "=", "value": category}]
        name = f"recognition-items-{category}" if category else "recognition-items"
        out.append(
            {
                "resourceType": "ValueSet",
                "id": name,
                "url": valueset_url(category),
                "version": catalogue.edition,
                "name": "".join(part.title() for part in name.split("-")),
                "title": f"Recognised {category or 'examination and test'} items",
                "status": "active",
                "compose": {"include": [include]},
            }
        )
    return out


def _display(item: Item) -> str:
    return item.name_en


def _item(catalogue: Catalogue, system: str | None, code: str | None) -> Item | None:
    if not code or (system is not None and system != catalogue.url):
        return None
    return catalogue.items.get(code)


def _properties(item: Item) -> list[tuple[str, str, Any]]:
    found: list[tuple[str, str, Any]] = [
        ("category", "valueCode", item.category),
        ("validityDays", "valueInteger", item.validity_days),
        ("qcCategory", "valueCode", item.qc_category),
    ]
    for name, value in (("loinc", item.loinc), ("modality", item.modality),
                        ("bodySite", item.body_site)):  # fmt: skip
        if value:
            found.append((name, "valueCode", value))
    found += [("serviceItem", "valueCode", code) for code in item.service_items]
    return found


def lookup(
    catalogue: Catalogue, system: str, code: str, wanted: list[str]
) -> dict[str, Any] | None:
    """``CodeSystem/$lookup``: the item's name, designations and properties."""
    item = _item(catalogue, system, code)
    if item is None:
        return None
    parts: list[dict[str, Any]] = [
        {"name": "name", "valueString": "RecognitionItems"},
        {"name": "version", "valueString": catalogue.edition},
        {"name": "display", "valueString": _display(item)},
        {"name": "designation", "part": [{"name": "language", "valueCode": "zh-CN"},
                                         {"name": "value", "valueString": item.name_zh}]},
        {"name": "designation", "part": [{"name": "language", "valueCode": "en"},
                                         {"name": "value", "valueString": item.name_en}]},
    ]  # fmt: skip
    for name, kind, value in _properties(item):
        if not wanted or name in wanted:
            parts.append(
                {"name": "property", "part": [{"name": "code", "valueCode": name},
                                              {"name": "value", kind: value}]}
            )  # fmt: skip
    return {"resourceType": "Parameters", "parameter": parts}


def validate_code(
    catalogue: Catalogue,
    system: str | None,
    code: str,
    display: str | None,
    category: str | None = None,
) -> dict[str, Any]:
    """``$validate-code``: result, and the display when the code is an item (in the
    value set's category, when one is named)."""
    item = _item(catalogue, system, code)
    if item is not None and category is not None and item.category != category:
        item = None
    parts: list[dict[str, Any]] = [{"name": "result", "valueBoolean": item is not None}]
    if item is None:
        where = f"the {category} items" if category else "the recognition catalogue"
        parts.append({"name": "message", "valueString": f"'{code[:64]}' is not in {where}"})
        return {"resourceType": "Parameters", "parameter": parts}
    names = {item.name_en, item.name_zh}
    if display is not None and display not in names:
        parts[0]["valueBoolean"] = False
        message = f"The display of '{code}' is not '{display[:64]}'"
        parts.append({"name": "message", "valueString": message})
    parts.append({"name": "display", "valueString": _display(item)})
    return {"resourceType": "Parameters", "parameter": parts}


def expand(
    catalogue: Catalogue,
    category: str | None,
    text: str | None,
    count: int | None,
    offset: int,
) -> dict[str, Any]:
    """``ValueSet/$expand`` with ``filter`` (any word of code or names, case
    ignored), ``count`` and ``offset``; items in code order."""
    needle = (text or "").casefold()
    items = [
        i
        for i in sorted(catalogue.items.values(), key=lambda i: i.code)
        if (category is None or i.category == category)
        and (not needle or any(needle in s.casefold() for s in (i.code, i.name_en, i.name_zh)))
    ]
    size = MAX_EXPANSION if count is None else min(count, MAX_EXPANSION)
    page = items[offset : offset + size]
    expansion: dict[str, Any] = {
        "identifier": f"urn:ehr-service:expansion:{catalogue.edition}:{category or 'all'}",
        "timestamp": format_instant(utc_now()),
        "total": len(items),
        "offset": offset,
        "parameter": [{"name": "version", "valueUri": f"{catalogue.url}|{catalogue.edition}"}],
    }
    if text:
        expansion["parameter"].append({"name": "filter", "valueString": text})
    if page:
        expansion["contains"] = [
            {"system": catalogue.url, "version": catalogue.edition, "code": i.code,
             "display": _display(i)}
            for i in page
        ]  # fmt: skip
    return {
        "resourceType": "ValueSet",
        "url": valueset_url(category),
        "version": catalogue.edition,
        "status": "active",
        "expansion": expansion,
    }


def translate(catalogue: Catalogue, system: str, code: str) -> dict[str, Any]:
    """``ConceptMap/$translate``: a LOINC or local code to its catalogue item; a
    national service item code to each item it covers (each narrower than it)."""
    found = catalogue.items_of_coding(system, code)
    equivalence = "narrower" if system == SERVICE_ITEM_SYSTEM else "equivalent"
    parts: list[dict[str, Any]] = [{"name": "result", "valueBoolean": bool(found)}]
    if not found:
        parts.append({"name": "message", "valueString": f"No item maps from {system}|{code}"})
    for item in found:
        parts.append(
            {"name": "match", "part": [
                {"name": "equivalence", "valueCode": equivalence},
                {"name": "concept", "valueCoding": {"system": catalogue.url, "code": item.code,
                                                    "display": _display(item)}},
            ]}
        )  # fmt: skip
    return {"resourceType": "Parameters", "parameter": parts}
