"""Compiled search-parameter extractors against a maintained FHIRPath library.

Evaluates every indexed search parameter of every Synthea resource both ways
(fhirpathpy, if installed, and ``ehr_service.fhir.fhirpath``), reports the
rate of each, and counts resources whose selected elements differ.
Run: ``.venv/bin/python tests/bench/fhirpath_compare.py`` (needs ``pip install fhirpathpy``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from ehr_service.fhir.search.registry import load_registry  # noqa: E402
from tests.conftest import sample_bundles  # noqa: E402


def _normal(elements: Any) -> set[bytes]:
    """Order- and duplicate-insensitive form (FHIRPath unions deduplicate; decimals
    come back as Decimal from the library)."""
    return {orjson.dumps(e, default=float, option=orjson.OPT_SORT_KEYS) for e in elements}


def main() -> None:
    try:
        from fhirpathpy import compile as fp_compile
    except ImportError:
        print("fhirpathpy is not installed; pip install fhirpathpy to compare")
        return
    registry = load_registry(ROOT / "fhir_profiles")
    resources = [
        e["resource"] for p in sample_bundles() for e in orjson.loads(p.read_bytes())["entry"]
    ]
    compiled_library: dict[tuple[str, str], Any] = {}
    for resource in resources:
        for parameter in registry.indexed(resource["resourceType"]):
            key = (resource["resourceType"], parameter.code)
            if key not in compiled_library and parameter.type != "composite":
                try:
                    compiled_library[key] = fp_compile(parameter.expression)
                except Exception:
                    compiled_library[key] = None
    started = time.perf_counter()
    ours = [
        [
            (p.code, p.extract(r))
            for p in registry.indexed(r["resourceType"])  # type: ignore[misc]
            if p.type != "composite"
        ]
        for r in resources
    ]
    ours_seconds = time.perf_counter() - started
    started = time.perf_counter()
    theirs = []
    for resource in resources:
        row = []
        for parameter in registry.indexed(resource["resourceType"]):
            if parameter.type == "composite":
                continue
            evaluate = compiled_library.get((resource["resourceType"], parameter.code))
            try:
                uses_resource_root = parameter.expression.startswith("Resource.")
                value = evaluate(resource) if evaluate and not uses_resource_root else None
                row.append((parameter.code, value))
            except Exception:
                row.append((parameter.code, None))
        theirs.append(row)
    theirs_seconds = time.perf_counter() - started
    compared = differing = unsupported = 0
    for a, b in zip(ours, theirs, strict=True):
        for (_code, mine), (_, library) in zip(a, b, strict=True):
            if library is None:
                unsupported += 1  # e.g. resolve(), which fhirpathpy does not implement
                continue
            compared += 1
            differing += _normal(mine) != _normal(library)
    n = len(resources)
    print(f"{n} resources, every indexed non-composite parameter")
    print(f"compiled extractors: {n / ours_seconds:,.0f} resources/s")
    print(
        f"fhirpathpy:          {n / theirs_seconds:,.0f} resources/s "
        f"({ours_seconds and theirs_seconds / ours_seconds:,.0f}x slower)"
    )
    print(
        f"evaluations compared: {compared}, differing: {differing}; "
        f"not evaluable by fhirpathpy: {unsupported}"
    )


if __name__ == "__main__":
    main()
