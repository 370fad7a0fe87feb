"""``_summary`` and ``_elements`` (R4 §3.1.1.5.9-10): subsets of a resource.

Summary elements come from the R4B models' ``summary_element_property`` marks;
a subset carries the ``SUBSETTED`` tag (R4 §3.1.1.5.10).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from ehr_service.fhir.errors import Category, FhirError
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


@cache
def _element_map(resource_type: str) -> tuple[dict[str, frozenset[str]], frozenset[str]] | None:
    """(each name ``_elements`` may give -> the JSON names it covers, the mandatory
    top-level elements); a choice's base name (``value``) covers its every type
    (``valueQuantity``, ``valueString``...). None: a type without a model."""
    if resource_type in R4_TYPES_WITHOUT_R4B_MODEL:
        return None
    from fhir.resources.R4B import get_fhir_model_class

    model = get_fhir_model_class(resource_type)
    names: dict[str, set[str]] = {}
    mandatory: set[str] = set()
    for name, info in model.model_fields.items():
        alias = info.alias or name
        if alias.startswith("_"):
            continue
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        names.setdefault(alias, set()).add(alias)
        base = extra.get("one_of_many")
        if isinstance(base, str):
            names.setdefault(base, set()).add(alias)
        if info.is_required() or extra.get("element_required") or extra.get("one_of_many_required"):
            mandatory.add(alias)
    return {k: frozenset(v) for k, v in names.items()}, frozenset(mandatory)


def elements_kept(resource_type: str, requested: frozenset[str]) -> frozenset[str]:
    """The JSON names ``_elements`` keeps: those asked for (choice base names
    expanded) and the mandatory ones, so the subset is still a valid resource
    (R4 §3.1.1.5.10). ``resourceType``, ``id`` and ``meta`` are always kept, so
    naming them is allowed (clients such as fhirpy always add ``resourceType``);
    any other element the type does not have is a 400."""
    info = _element_map(resource_type)
    if info is None:
        return requested
    names, mandatory = info
    requested = requested - _ALWAYS
    unknown = sorted(n for n in requested if n not in names)
    if unknown:
        raise FhirError.of(
            Category.INCORRECT,
            f"_elements: {resource_type} has no element {', '.join(unknown)[:200]}",
            code="value",
            expression=["_elements"],
        )
    return frozenset(a for n in requested for a in names[n]) | mandatory


def element_names(resource_type: str) -> frozenset[str] | None:
    """The names ``_elements`` may give for a type (None: a type without a model)."""
    info = _element_map(resource_type)
    return frozenset(info[0]) if info is not None else None


def mandatory_elements(resource_type: str) -> frozenset[str]:
    info = _element_map(resource_type)
    return info[1] if info is not None else frozenset()


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
    elif summary == "text":  # text, id, meta and the mandatory elements (R4 §3.1.1.5.9)
        keep = _ALWAYS | {"text"} | mandatory_elements(str(resource.get("resourceType")))
    elif summary == "data":
        keep = {k for k in resource if k != "text"}
    elif elements is not None:  # already expanded by elements_kept
        keep = _ALWAYS | set(elements) | {f"_{e}" for e in elements}
    else:
        return resource
    kept = {k: v for k, v in resource.items() if k in keep}
    return _tagged(resource, kept)


def requested_elements(resource_type: str, query: dict[str, list[str]]) -> frozenset[str] | None:
    """``_elements`` of a request, expanded and checked (None: not asked for)."""
    raw = query.get("_elements")
    if not raw:
        return None
    names = frozenset(e.strip() for value in raw for e in value.split(",") if e.strip())
    return elements_kept(resource_type, names)


def summary_of(query: dict[str, list[str]]) -> str | None:
    """``_summary`` of a request, checked."""
    values = query.get("_summary")
    if not values:
        return None
    value = values[-1]
    if value not in SUMMARY_VALUES:
        raise FhirError.of(
            Category.INCORRECT,
            f"_summary must be one of {sorted(SUMMARY_VALUES)}",
            code="value",
            expression=["_summary"],
        )
    return value


SUMMARY_VALUES = frozenset({"true", "false", "text", "data", "count"})


def check_contained(query: dict[str, list[str]]) -> None:
    """``_contained``/``_containedType``: contained resources are searched as part of
    their container only, so only the default (false, container) is served."""
    for name, allowed, served in (
        ("_contained", {"true", "false", "both"}, "false"),
        ("_containedType", {"container", "contained"}, "container"),
    ):
        for value in query.get(name, []):
            if value not in allowed:
                raise FhirError.of(
                    Category.INCORRECT,
                    f"{name} must be one of {sorted(allowed)}",
                    code="value",
                    expression=[name],
                )
            if value != served:
                raise FhirError.of(
                    Category.NOT_IMPLEMENTED,
                    f"{name}={value} is not supported: contained resources are searched "
                    "within their container",
                    code="not-supported",
                    expression=[name],
                )
