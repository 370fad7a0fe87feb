"""A minimal valid resource of every R4 type, made from the definitions: the
required elements only, each with a value of its type (for a required binding,
its first code). From the ``fhir.resources.R4B`` models where R4B has the type,
else from ``fhir_profiles/r4-structures.json`` (the R4 types R4B dropped)."""

from __future__ import annotations

import typing
from functools import cache
from typing import Any

import orjson

from ehr_service.config import PROJECT_ROOT
from ehr_service.fhir.resource_types import R4_TYPES_WITHOUT_R4B_MODEL

XHTML = '<div xmlns="http://www.w3.org/1999/xhtml">x</div>'
# A value per primitive type (R4 §2.24), by the models' annotation or the type code.
PRIMITIVES: dict[str, Any] = {
    "boolean": True,
    "integer": 1,
    "positiveInt": 1,
    "unsignedInt": 1,
    "decimal": 1,
    "string": "x",
    "markdown": "x",
    "code": "x",
    "id": "x1",
    "uri": "urn:x",
    "url": "https://example.org/x",
    "canonical": "https://example.org/x",
    "oid": "urn:oid:1.2.3",
    "uuid": "urn:uuid:7f9f3f33-3ec7-4d7c-9e7a-95d2b7d0d1a1",
    "date": "2024-01-02",
    "dateTime": "2024-01-02T03:04:05+08:00",
    "instant": "2024-01-02T03:04:05+08:00",
    "time": "03:04:05",
    "base64Binary": "eA==",
    "xhtml": XHTML,
}
# Complex types that need one element of the caller's choosing (none is required).
SMALL = {
    "Narrative": {"status": "generated", "div": XHTML},
    "Reference": {"display": "x"},
    "Quantity": {"value": 1},
    "Money": {"value": 1, "currency": "CNY"},
    "Period": {"start": "2024-01-02"},
    "SimpleQuantity": {"value": 1},
    "Extension": {"url": "urn:x", "valueString": "x"},
}


def _primitive_of(annotation: Any) -> str | None:
    """The FHIR primitive of a model field's annotation (``Annotated[str, Code()]``)."""
    for arg in typing.get_args(annotation):
        for meta in getattr(arg, "__metadata__", ()):
            name = type(meta).__name__
            return name[0].lower() + name[1:]
        found = _primitive_of(arg)
        if found:
            return found
    metadata = getattr(annotation, "__metadata__", ())
    if metadata:
        name = type(metadata[0]).__name__
        return name[0].lower() + name[1:]
    return None


def _complex_of(annotation: Any) -> tuple[str, bool] | None:
    """(class name, is a list) of a model field's complex type."""
    for arg in (annotation, *typing.get_args(annotation)):
        origin = typing.get_origin(arg)
        if origin in (list, typing.List):  # noqa: UP006
            inner = _complex_of(typing.get_args(arg)[0])
            return (inner[0], True) if inner else None
        name = getattr(arg, "__name__", "")
        if name.endswith("Type") and name != "NoneType" and arg.__module__ == "abc":
            return name.removesuffix("Type"), False
    return None


@cache
def _bindings() -> dict[str, list[str]]:
    path = PROJECT_ROOT / "fhir_profiles" / "required-bindings.json"
    bindings: dict[str, list[str]] = orjson.loads(path.read_bytes())
    return bindings


def _code(path: str, enum: list[str]) -> str:
    """A code the element's required binding allows (the models know most)."""
    allowed = _bindings().get(path) or enum
    return allowed[0] if allowed else "x"


def _from_model(class_name: str, path: str, depth: int = 0) -> dict[str, Any]:
    from fhir.resources.R4B import get_fhir_model_class

    if class_name in SMALL:
        return dict(SMALL[class_name])
    model = get_fhir_model_class(class_name)
    out: dict[str, Any] = {}
    chosen: set[str] = set()
    for name, field in model.model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        choice = extra.get("one_of_many")
        if choice and (not extra.get("one_of_many_required") or choice in chosen):
            continue
        if not (field.is_required() or extra.get("element_required") or choice):
            continue
        if choice:
            chosen.add(str(choice))
        complex_type = _complex_of(field.annotation)
        if complex_type is not None:
            value: Any = _from_model(complex_type[0], f"{path}.{name}", depth + 1)
            out[name] = [value] if complex_type[1] else value
            continue
        enum = [v for v in extra.get("enum_values") or () if v != "+"]
        if bool in typing.get_args(field.annotation):
            value = True
        elif _primitive_of(field.annotation) == "code" or enum:
            value = _code(f"{path}.{name}", enum)
        else:
            value = PRIMITIVES.get(_primitive_of(field.annotation) or "string", "x")
        is_list = "List" in str(field.annotation)
        out[name] = [value] if is_list else value
    if not out and depth > 0:  # a datatype with nothing required: one element
        for name, field in model.model_fields.items():
            if name in {"id", "fhir_comments", "extension", "modifierExtension"}:
                continue
            if _primitive_of(field.annotation) in {"string", "markdown"}:
                is_list = "List" in str(field.annotation)
                out[name] = ["x"] if is_list else "x"
                break
    return out


@cache
def _structures() -> dict[str, Any]:
    path = PROJECT_ROOT / "fhir_profiles" / "r4-structures.json"
    structures: dict[str, Any] = orjson.loads(path.read_bytes())
    return structures


def _from_structure(
    elements: dict[str, Any], resource_type: str, prefix: str = ""
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, definition in elements.items():
        head, _, name = path.rpartition(".")
        if head != prefix.rstrip(".") or definition[0] < 1:
            continue
        codes, many = definition[2], definition[1] != "1"
        code = codes[0]
        key = name.replace("[x]", code[0].upper() + code[1:])
        if code == "code":
            value: Any = _code(f"{resource_type}.{path}", [])
        elif code in PRIMITIVES:
            value = PRIMITIVES[code]
        elif code in {"BackboneElement", "Element"}:
            value = _from_structure(elements, resource_type, f"{path}.")
        elif code in SMALL:
            value = dict(SMALL[code])
        else:
            value = _from_model(code, f"{resource_type}.{path}", 1)
        out[key] = [value] if many else value
    return out


def minimal(resource_type: str) -> dict[str, Any]:
    if resource_type in R4_TYPES_WITHOUT_R4B_MODEL:
        body = _from_structure(_structures()["types"][resource_type]["elements"], resource_type)
    else:
        body = _from_model(resource_type, resource_type)
    return {"resourceType": resource_type, **body}
