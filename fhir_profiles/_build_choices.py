"""Build r4-choice-elements.json: every choice element of every R4 resource
("Observation.effective" for Observation.effective[x]), so that search
expressions naming one select whichever effective[x] a resource carries.

Usage: python fhir_profiles/_build_choices.py DIR_WITH_OFFICIAL_R4_DEFINITIONS
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(source: Path) -> None:
    bundle = json.loads((source / "profiles-resources.json").read_text())
    choices = sorted(
        element["path"][:-3]
        for entry in bundle["entry"]
        if entry["resource"].get("resourceType") == "StructureDefinition"
        and entry["resource"].get("kind") == "resource"
        for element in entry["resource"]["snapshot"]["element"]
        if element["path"].endswith("[x]")
    )
    target = Path(__file__).with_name("r4-choice-elements.json")
    target.write_text(json.dumps(choices, indent=0) + "\n")
    print(f"{target.name}: {len(choices)} choice elements")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
