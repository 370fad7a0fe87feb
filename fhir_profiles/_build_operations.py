"""Copy the official R4 OperationDefinitions of the operations this server routes
from the R4 definitions (``profiles-resources.json``) into ``operations/``, as the
specification publishes them less their generated narrative (``text``).

The other files of ``operations/`` are written by hand: the Bulk Data Access v2
operations, the R5 Patient ``$merge``, IHE PIXm ``$ihe-pix`` (each after its
specification, under its official canonical URL) and the service's own operations
(``urn:ehr-service:OperationDefinition/...``).

Usage: python fhir_profiles/_build_operations.py DIR_WITH_OFFICIAL_R4_DEFINITIONS
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OFFICIAL = (
    "CodeSystem-lookup",
    "CodeSystem-validate-code",
    "ConceptMap-translate",
    "Patient-everything",
    "Patient-match",
    "Resource-validate",
    "ValueSet-expand",
    "ValueSet-validate-code",
)


def main(source: Path, target: Path) -> None:
    bundle = json.loads((source / "profiles-resources.json").read_text(encoding="utf-8"))
    found = {
        entry["resource"]["id"]: entry["resource"]
        for entry in bundle["entry"]
        if entry["resource"]["resourceType"] == "OperationDefinition"
    }
    target.mkdir(exist_ok=True)
    for definition_id in OFFICIAL:
        definition = dict(found[definition_id])
        definition.pop("text", None)
        path = target / f"OperationDefinition-{definition_id}.json"
        path.write_text(
            json.dumps(definition, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
        )
        print(f"{path.name}: {len(definition['parameter'])} parameters")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(__file__).resolve().parent / "operations")
