"""Build r4-structures.json: element trees of the R4 resource types that
fhir.resources R4B has no model for, and of the datatypes they use.

Usage: python fhir_profiles/_build_structures.py DIR_WITH_OFFICIAL_R4_DEFINITIONS
(the folder holding profiles-resources.json and profiles-types.json).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

TYPES = [
    "EffectEvidenceSynthesis",
    "MedicinalProduct",
    "MedicinalProductAuthorization",
    "MedicinalProductContraindication",
    "MedicinalProductIndication",
    "MedicinalProductIngredient",
    "MedicinalProductInteraction",
    "MedicinalProductManufactured",
    "MedicinalProductPackaged",
    "MedicinalProductPharmaceutical",
    "MedicinalProductUndesirableEffect",
    "RiskEvidenceSynthesis",
    "SubstanceNucleicAcid",
    "SubstancePolymer",
    "SubstanceProtein",
    "SubstanceReferenceInformation",
    "SubstanceSourceMaterial",
    "SubstanceSpecification",
]
REGEX_EXT = "http://hl7.org/fhir/StructureDefinition/regex"


FHIR_TYPE_EXT = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"


def _type_code(element_type: dict) -> str:
    """The FHIR type of an element; System.String ids name theirs in an extension."""
    code = element_type["code"]
    if code.startswith("http://hl7.org/fhirpath/"):
        for ext in element_type.get("extension", []):
            if ext["url"] == FHIR_TYPE_EXT:
                return ext.get("valueUrl") or ext.get("valueUri") or "string"
        return "string"
    return code


def main(source: Path) -> None:
    definitions = {}
    primitives = {}
    for name in ("profiles-types.json", "profiles-resources.json"):
        for entry in json.loads((source / name).read_text())["entry"]:
            sd = entry["resource"]
            if (
                sd.get("resourceType") != "StructureDefinition"
                or sd.get("derivation") == "constraint"
            ):
                continue
            definitions[sd["name"]] = sd
            if sd.get("kind") == "primitive-type":
                regex = None
                for element in sd["snapshot"]["element"]:
                    if element["path"].endswith(".value"):
                        for t in element.get("type", []):
                            for ext in t.get("extension", []):
                                if ext["url"] == REGEX_EXT:
                                    regex = ext["valueString"]
                primitives[sd["name"]] = regex
    out: dict[str, dict[str, list[object]]] = {}
    pending = [*TYPES, "Element", "BackboneElement", "Extension"]
    while pending:
        name = pending.pop()
        if name in out or name in primitives or name not in definitions:
            continue
        elements: dict[str, list[object]] = {}
        for element in definitions[name]["snapshot"]["element"][1:]:
            codes = [_type_code(t) for t in element.get("type", [])]
            if element["path"] == f"{name}.id" and definitions[name].get("kind") == "resource":
                codes = ["id"]  # R4 declares Resource.id a string; the id rules apply (§2.1)
            elements[element["path"].split(".", 1)[1]] = [
                element.get("min", 0),
                element.get("max", "*"),
                codes,
                element.get("contentReference", "").lstrip("#").split(".", 1)[-1] or None,
            ]
            pending.extend(c for c in codes if c not in out)
        out[name] = elements
    target = Path(__file__).with_name("r4-structures.json")
    document = {
        "source": "HL7 FHIR R4 4.0.1 StructureDefinitions (CC0)",
        "resources": TYPES,
        "primitives": primitives,
        "structures": out,
    }
    target.write_text(json.dumps(document, separators=(",", ":"), sort_keys=True) + "\n")
    print(f"{target.name}: {len(out)} structures, {target.stat().st_size} bytes")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
