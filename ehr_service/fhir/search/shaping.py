"""``_summary`` and ``_elements`` (R4 §3.1.1.5.9-10): subsets of a resource.

Summary elements come from the R4B models' ``summary_element_property`` marks;
a subset carries the ``SUBSETTED`` tag (R4 §3.1.1.5.10).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from ehr_service.fhir.resource_types import R4_TYPES_WITHOUT_R4B_MODEL

SUBSETTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
    "display": "subsetted",
}
_ALWAYS = {"resourceType", "id", "meta"}


@cache
def summary_elements(resource_type: str) -> frozenset[str] | None:
    """JSON names of the summary elements of a type (None: unknown, keep all)."""
    if resource_type in R4_TYPES_WITHOUT_R4B_MODEL:
        return None
    from fhir.resources.R4B import get_fhir_model_class

    model = get_fhir_model_class(resource_type)
    names = set()
    for name, info in model.model_fields.items():
        extra = info.json_schema_extra
        if isinstance(extra, dict) and extra.get("summary_element_property"):
            alias = info.alias or name
            names.add(alias)
            if "one_of_many" in extra:
                names.add(alias)
    return frozenset(names)


def _tagged(resource: dict[str, Any], kept: dict[str, Any]) -> dict[str, Any]:
    meta = dict(kept.get("meta") or {})
    tags = [t for t in meta.get("tag", []) if t.get("code") != "SUBSETTED"]
    meta["tag"] = [*tags, SUBSETTED]
    kept["meta"] = meta
    return kept


def subset(
    resource: dict[str, Any], summary: str | None, elements: frozenset[str] | None
) -> dict[str, Any]:
    """The resource reduced per ``_summary`` (true/text/data) or ``_elements``."""
    if summary == "true":
        allowed = summary_elements(str(resource.get("resourceType")))
        if allowed is None:
            return resource
        keep = _ALWAYS | allowed | {f"_{a}" for a in allowed}
    elif summary == "text":
        keep = _ALWAYS | {"text"}
    elif summary == "data":
        keep = {k for k in resource if k != "text"}
    elif elements is not None:
        keep = _ALWAYS | set(elements) | {f"_{e}" for e in elements}
    else:
        return resource
    kept = {k: v for k, v in resource.items() if k in keep}
    return _tagged(resource, kept)
