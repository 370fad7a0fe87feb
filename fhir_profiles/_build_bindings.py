"""Build required-bindings.json: for every ``code`` element of an R4 resource with a
*required* binding (Observation.status, Encounter.class is not one: Coding), the
codes its value set allows, expanded from the official R4 definitions. The model
library accepts any string there; the service checks these on every write and in
``$validate``. Value sets that cannot be enumerated from the definitions alone
(filters, other value sets by reference that cannot be resolved) are left out.

Usage: python fhir_profiles/_build_bindings.py DIR_WITH_OFFICIAL_R4_DEFINITIONS
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _codes(concepts: list[dict[str, Any]]) -> list[str]:
    out: list[str] = []
    for concept in concepts:
        out.append(concept["code"])
        out.extend(_codes(concept.get("concept", [])))
    return out


def _expand(
    url: str, valuesets: dict[str, Any], codesystems: dict[str, Any], depth: int = 0
) -> list[str] | None:
    valueset = valuesets.get(url)
    if valueset is None or depth > 5:
        return None
    compose = valueset.get("compose") or {}
    if compose.get("exclude"):
        return None
    codes: list[str] = []
    for include in compose.get("include", []):
        if include.get("filter"):
            return None
        for nested in include.get("valueSet", []):
            expanded = _expand(nested.split("|")[0], valuesets, codesystems, depth + 1)
            if expanded is None:
                return None
            codes.extend(expanded)
        if "concept" in include:
            codes.extend(c["code"] for c in include["concept"])
        elif "system" in include:
            system = codesystems.get(include["system"])
            if system is None or system.get("content") != "complete":
                return None
            codes.extend(_codes(system.get("concept", [])))
    return sorted(set(codes)) or None


def main(source: Path) -> None:
    definitions = json.loads((source / "valuesets.json").read_text())
    definitions["entry"] += json.loads((source / "profiles-resources.json").read_text())["entry"]
    valuesets = {}
    codesystems = {}
    for entry in definitions["entry"]:
        resource = entry["resource"]
        if resource.get("resourceType") == "ValueSet":
            valuesets[resource["url"]] = resource
        elif resource.get("resourceType") == "CodeSystem":
            codesystems[resource["url"]] = resource
    bindings: dict[str, list[str]] = {}
    skipped = 0
    resources = json.loads((source / "profiles-resources.json").read_text())
    for entry in resources["entry"]:
        structure = entry["resource"]
        if structure.get("resourceType") != "StructureDefinition":
            continue
        if structure.get("kind") != "resource":
            continue
        for element in structure["snapshot"]["element"]:
            binding = element.get("binding") or {}
            types = [t["code"] for t in element.get("type", [])]
            if binding.get("strength") != "required" or types != ["code"]:
                continue
            codes = _expand(binding["valueSet"].split("|")[0], valuesets, codesystems)
            if codes is None:
                skipped += 1
                continue
            bindings[element["path"]] = codes
    target = Path(__file__).with_name("required-bindings.json")
    target.write_text(json.dumps(bindings, indent=0, sort_keys=True) + "\n")
    print(f"{target.name}: {len(bindings)} elements ({skipped} not enumerable, left out)")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
