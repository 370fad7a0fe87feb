"""Build ``r4-xml.json``: what the XML format needs to know of every R4 type.

Usage: ``python fhir_profiles/_build_xml.py SHARED_FHIR_DIR``

Reads the official R4 (4.0.1) StructureDefinition bundles ``profiles-resources.json``
and ``profiles-types.json`` and keeps, for every resource and complex datatype, the
child elements of each element path **in definition order** (the order the XML
format requires, R4 §2.6.1), each as ``[name, repeats, [type codes]]`` plus an
optional fourth member of flags: ``"a"`` for an XML attribute (``Element.id``,
``Extension.url``), ``"x"`` for XHTML (``Narrative.div``). A backbone element's
type is ``"@path"`` (its children are under that path of the same type), a
``contentReference`` likewise (``Questionnaire.item.item`` → ``"@item"``).
Primitive types map to their JSON kind (R4 §2.6.2): boolean, integer, decimal or
string. ``ehr_service/fhir/xml.py`` reads it.

Output layout::

    {"fhirVersion": "4.0.1",
     "primitives": {"boolean": "boolean", "positiveInt": "integer", ...},
     "resources": ["Account", ...],
     "types": {"Quantity": {"": [["id", 0, ["string"], "a"], ["extension", 1, ["Extension"]],
                                 ["value", 0, ["decimal"]], ...]},
               "Patient": {"": [...], "contact": [...], ...}, ...}}
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

FHIR_TYPE_URL = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
SYSTEM_PREFIX = "http://hl7.org/fhirpath/System."
JSON_KINDS = {"boolean": "boolean", "integer": "integer", "decimal": "decimal"}
INTEGER_TYPES = {"integer", "positiveInt", "unsignedInt"}


def _type_code(element_type: dict[str, Any]) -> str:
    for ext in element_type.get("extension", ()):
        if ext.get("url") == FHIR_TYPE_URL:
            return str(ext["valueUrl"])
    code = str(element_type["code"])
    return code.removeprefix(SYSTEM_PREFIX).lower() if code.startswith(SYSTEM_PREFIX) else code


def _children(definition: dict[str, Any]) -> dict[str, list[list[Any]]]:
    root = definition["type"]
    out: dict[str, list[list[Any]]] = {"": []}
    for element in definition["snapshot"]["element"][1:]:
        path = element["path"].removeprefix(root + ".")
        parent, _, name = path.rpartition(".")
        repeats = 1 if element.get("max") not in {"0", "1"} else 0
        if element.get("max") == "0":
            continue
        if "contentReference" in element:
            types = ["@" + element["contentReference"].split(".", 1)[1]]
        else:
            codes = [_type_code(t) for t in element.get("type", ())]
            if codes in (["BackboneElement"], ["Element"]):  # children follow in the snapshot
                types = ["@" + path]
                out.setdefault(path, [])
            else:
                types = codes
        entry: list[Any] = [name, repeats, types]
        if "xmlAttr" in element.get("representation", ()):
            entry.append("a")
        elif types == ["xhtml"]:
            entry.append("x")
        out.setdefault(parent, []).append(entry)
    return out


def build(shared: Path) -> dict[str, Any]:
    primitives: dict[str, str] = {}
    resources: list[str] = []
    types: dict[str, Any] = {}
    for name in ("profiles-types.json", "profiles-resources.json"):
        bundle = json.loads((shared / name).read_text(encoding="utf-8"))
        for entry in bundle["entry"]:
            sd = entry["resource"]
            if sd.get("resourceType") != "StructureDefinition" or sd.get("derivation") == (
                "constraint"
            ):
                continue
            if sd["kind"] == "primitive-type":
                base = sd["type"]
                kind = "integer" if base in INTEGER_TYPES else JSON_KINDS.get(base, "string")
                primitives[base] = kind
            elif sd["kind"] in {"complex-type", "resource"}:
                types[sd["type"]] = _children(sd)
                if sd["kind"] == "resource" and not sd.get("abstract"):
                    resources.append(sd["type"])
    return {
        "fhirVersion": "4.0.1",
        "primitives": dict(sorted(primitives.items())),
        "resources": sorted(resources),
        "types": dict(sorted(types.items())),
    }


def main() -> None:
    shared = Path(sys.argv[1])
    out = Path(__file__).resolve().parent / "r4-xml.json"
    table = build(shared)
    out.write_text(json.dumps(table, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"{out.name}: {len(table['resources'])} resources, {len(table['types'])} types")


if __name__ == "__main__":
    main()
