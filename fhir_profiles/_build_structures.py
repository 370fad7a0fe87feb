"""Build ``r4-structures.json``: the element trees the structure validator needs.

Usage: ``python fhir_profiles/_build_structures.py SHARED_FHIR_DIR``

Reads the official R4 (4.0.1) StructureDefinition bundles ``profiles-resources.json``
and ``profiles-types.json`` and keeps, for the R4 resource types that have no
``fhir.resources.R4B`` model and every datatype they reach, only what structural
validation needs (``ehr_service/fhir/structure_validation.py`` reads it): per
element path ``[min, max, [type codes]]`` plus an optional fourth member
``{"contentReference": ..., "xmlAttr": true, "profile": {...}}``.
Primitive types keep their JSON kind and the regex from the ``value`` element
(extension ``http://hl7.org/fhir/StructureDefinition/regex``).

Output layout::

    {"fhirVersion": "4.0.1",
     "resources": [the 18 names],
     "primitives": {"date": {"json": "string", "regex": "..."}, ...},
     "types": {"Quantity": {"kind": "complex-type",
                            "elements": {"value": [0, "1", ["decimal"]], ...}}, ...}}

Element paths are relative to the type (``name.namePart``, not ``MedicinalProduct.name...``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ehr_service.fhir.resource_types import R4_TYPES_WITHOUT_R4B_MODEL

# The R4 types fhir.resources R4B has no model for (one list, in the package).
STRUCTURE_ONLY_TYPES = tuple(sorted(R4_TYPES_WITHOUT_R4B_MODEL))
# Always shipped, even if (in theory) nothing referenced them.
ROOT_DATATYPES = (
    "Element",
    "BackboneElement",
    "Extension",
    "Meta",
    "Narrative",
    "Reference",
    "CodeableConcept",
    "Coding",
    "Quantity",
)
REGEX_URL = "http://hl7.org/fhir/StructureDefinition/regex"
FHIR_TYPE_URL = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
SYSTEM_PREFIX = "http://hl7.org/fhirpath/System."
PROFILE_PREFIX = "http://hl7.org/fhir/StructureDefinition/"
# FHIR R4 §2.6.2: these primitives (and their specialisations) are JSON
# booleans/numbers; every other primitive is a JSON string.
JSON_KINDS = {"boolean": "boolean", "integer": "integer", "decimal": "decimal"}
# The official base64Binary regex, (\s*([0-9a-zA-Z\+/=]){4}\s*)+, backtracks
# exponentially on a non-matching value with many blank-separated groups (a
# ReDoS). The whitespace between two groups can be split between the two \s*;
# this form accepts exactly the same language with one way to match.
SAFE_REGEXES = {r"(\s*([0-9a-zA-Z\+/=]){4}\s*)+": r"\s*(?:[0-9a-zA-Z+/=]{4}\s*)+"}


def _load(shared: Path) -> dict[str, dict[str, Any]]:
    definitions: dict[str, dict[str, Any]] = {}
    for name in ("profiles-types.json", "profiles-resources.json"):
        bundle = json.loads((shared / name).read_text(encoding="utf-8"))
        for entry in bundle["entry"]:
            resource = entry["resource"]
            if resource["resourceType"] == "StructureDefinition":
                definitions[resource["id"]] = resource
    return definitions


def _ext(holder: dict[str, Any], url: str) -> Any:
    for ext in holder.get("extension", ()):
        if ext["url"] == url:
            return ext.get("valueString", ext.get("valueUrl"))
    return None


def _type_code(element: dict[str, Any], type_: dict[str, Any]) -> str:
    code: str = type_["code"]
    if element.get("base", {}).get("path") == "Resource.id":
        # Resource snapshots copy Resource.id as System.String/"string", but the
        # base Resource definition (and §2.6.2 for ids) says it is an ``id``.
        return "id"
    if code.startswith(SYSTEM_PREFIX):
        # Element.id, Extension.url: FHIRPath system types; the fhir-type
        # extension names the FHIR primitive whose rules apply.
        fhir_type = _ext(type_, FHIR_TYPE_URL)
        return str(fhir_type) if fhir_type else "string"
    return code


def _primitive(definitions: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
    definition = definitions[name]
    root = name
    while True:  # JSON kind comes from the root primitive (positiveInt -> integer)
        parent = definitions[root]["baseDefinition"].rsplit("/", 1)[-1]
        if definitions[parent]["kind"] != "primitive-type":
            break
        root = parent
    out: dict[str, Any] = {"json": JSON_KINDS.get(root, "string")}
    for element in definition["snapshot"]["element"]:
        if element["path"] == f"{name}.value":
            regex = _ext(element["type"][0], REGEX_URL)
            if regex:
                out["regex"] = SAFE_REGEXES.get(regex, regex)
            if "maxLength" in element:
                out["maxLength"] = element["maxLength"]
    return out


def _elements(definition: dict[str, Any], wanted: list[str]) -> dict[str, list[Any]]:
    """Compact element records; appends newly seen type names to ``wanted``."""
    out: dict[str, list[Any]] = {}
    elements = definition["snapshot"]["element"]
    declared = {e["path"] for e in definition.get("differential", {}).get("element", ())}
    for element in elements[1:]:  # [0] is the type itself
        base_path = element.get("base", {}).get("path", element["path"])
        if (
            definition.get("derivation") == "specialization"
            and base_path.split(".", 1)[0] == definition["type"]
            and element["path"] not in declared
        ):
            # A snapshot is the base type's elements plus the differential. The
            # shared bundle has some that are neither (Meta.project, Meta.author...,
            # not in R4 4.0.1): leave them out so they stay unknown elements.
            print(
                f"warning: {element['path']} is in the snapshot but not the differential; left out",
                file=sys.stderr,
            )
            continue
        path = element["path"].split(".", 1)[1]
        base_max = element.get("base", {}).get("max", element["max"])
        if base_max not in ("0", "1") and element["max"] in ("0", "1"):
            # JSON array-ness follows the base max; the validator uses max.
            raise SystemExit(f"{element['path']}: max {element['max']} narrows base {base_max}")
        codes: list[str] = []
        extra: dict[str, Any] = {}
        for type_ in element.get("type", ()):
            code = _type_code(element, type_)
            codes.append(code)
            wanted.append(code)
            for profile in type_.get("profile", ()):
                # Only core profiles (SimpleQuantity) occur in base definitions.
                name = profile.removeprefix(PROFILE_PREFIX)
                extra.setdefault("profile", {})[code] = name
                wanted.append(name)
        if "contentReference" in element:
            extra["contentReference"] = element["contentReference"]
        if "xmlAttr" in element.get("representation", ()):
            extra["xmlAttr"] = True  # Element.id, Extension.url: no `_x` sibling in JSON
        record: list[Any] = [element["min"], element["max"], codes]
        if extra:
            record.append(extra)
        out[path] = record
    return out


def build(shared: Path) -> dict[str, Any]:
    definitions = _load(shared)
    wanted = [*STRUCTURE_ONLY_TYPES, *ROOT_DATATYPES]
    types: dict[str, dict[str, Any]] = {}
    primitives: dict[str, dict[str, Any]] = {}
    while wanted:
        name = wanted.pop(0)
        if name in types or name in primitives or name == "Resource":
            continue  # Resource: contained resources are checked by resourceType
        definition = definitions[name]
        if definition["kind"] == "primitive-type":
            primitives[name] = _primitive(definitions, name)
            continue
        record: dict[str, Any] = {"kind": definition["kind"]}
        if definition.get("derivation") == "constraint":
            record["base"] = definition["type"]
        record["elements"] = _elements(definition, wanted)
        types[name] = record
    return {
        "fhirVersion": definitions["Resource"].get("fhirVersion", "4.0.1"),
        "resources": list(STRUCTURE_ONLY_TYPES),
        "primitives": dict(sorted(primitives.items())),
        "types": dict(sorted(types.items())),
    }


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} SHARED_FHIR_DIR", file=sys.stderr)
        return 2
    data = build(Path(argv[1]))
    target = Path(__file__).resolve().parent / "r4-structures.json"
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    target.write_text(text + "\n", encoding="utf-8")
    print(
        f"wrote {target} ({len(text) + 1} bytes, {len(data['types'])} types, "
        f"{len(data['primitives'])} primitives)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
