"""R4 JSON typing (§2.6.2): each primitive's JSON type, checked against its
element definition before the model sees it.

boolean is JSON ``true``/``false``; integer, positiveInt and unsignedInt are JSON
whole numbers; decimal is a JSON number; every other primitive (string, code,
date, dateTime, uri...) is a JSON string; a primitive's ``_element`` sibling is
an object (an array of objects and nulls for a repeating element). The R4B
models coerce (``"no"`` becomes false, ``"6.1"`` a number, ``1`` true), which R4
JSON does not allow and which a JavaScript client reads differently
(``"no"`` is truthy), so a mismatch is a 400 naming the element.

The element types come from the ``fhir.resources`` model classes (their field
annotations), compiled once per class into a map from JSON property name.
"""

from __future__ import annotations

import datetime
import types
import typing
from decimal import Decimal
from functools import cache
from typing import Any

from ehr_service.fhir.errors import Issue
from ehr_service.fhir.jsonio import Number

MAX_ISSUES = 100
# Decimals are kept and indexed exactly; their exponent stays within ±4999 (a
# documented limit far beyond any measurement; 1e5000 is refused with a 400).
DECIMAL_EXPONENT_LIMIT = 4999


def decimal_in_range(value: Decimal) -> bool:
    """Within the documented limit: the first and the last digit's places both
    within ±4999 (so at most 10,000 digits, which every backend holds exactly)."""
    if not value.is_finite():
        return False
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)
    if not -DECIMAL_EXPONENT_LIMIT - 1 <= exponent <= DECIMAL_EXPONENT_LIMIT:
        return False
    return value == 0 or -DECIMAL_EXPONENT_LIMIT - 1 <= value.adjusted() <= DECIMAL_EXPONENT_LIMIT


_STRINGS = (str, datetime.date, datetime.datetime, datetime.time)
_EXPECTED = {
    "boolean": "JSON true or false",
    "integer": "a JSON whole number",
    "decimal": "a JSON number",
    "string": "a JSON string",
}

# JSON property -> (kind, repeats, model class of a complex element or None)
Fields = dict[str, tuple[str, bool, Any]]


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """(the element type, whether it repeats) of a field annotation."""
    many = False
    while True:
        origin = typing.get_origin(annotation)
        args = typing.get_args(annotation)
        if origin is typing.Union or origin is types.UnionType:
            kinds = [a for a in args if a is not type(None)]
            if len(kinds) > 1 and all(map(_string_like, kinds)):  # url: AnyUrl or str
                return str, many
            if len(kinds) > 1:  # e.g. fhir_comments: str or a list of them
                return _ANY, many
            annotation = kinds[0]
        elif origin in (list, typing.List):  # noqa: UP006 - the models use typing.List
            annotation, many = args[0], True
        elif origin is typing.Annotated:
            annotation = args[0]
        else:
            return annotation, many


def _string_like(kind: Any) -> bool:
    return isinstance(kind, type) and (
        issubclass(kind, _STRINGS) or kind.__name__ in ("AnyUrl", "Url")
    )


class _ANY:
    """An element of more than one JSON type: left to the model."""


def _kind(element: Any) -> tuple[str, Any]:
    if element is bool:
        return "boolean", None
    if element is int:
        return "integer", None
    if element is Decimal or element is float:
        return "decimal", None
    if isinstance(element, type) and issubclass(element, _STRINGS):
        return "string", None
    name = getattr(element, "__name__", "")
    if name == "ResourceType":
        return "resource", None
    if name == "FHIRPrimitiveExtensionType":
        return "sibling", None
    klass = getattr(element, "get_model_klass", None)
    if callable(klass):
        try:
            return "complex", klass()
        except (ImportError, AttributeError, LookupError):
            return "unknown", None
    return "unknown", None


@cache
def _fields(model: Any) -> Fields:
    out: Fields = {}
    for name, info in model.model_fields.items():
        element, many = _unwrap(info.annotation)
        kind, target = _kind(element)
        out[info.alias or name] = (kind, many, target)
    return out


@cache
def _resource_model(resource_type: str) -> Any:
    from fhir.resources.R4B import get_fhir_model_class

    try:
        return get_fhir_model_class(resource_type)
    except (KeyError, ValueError, LookupError):
        return None


def json_type_issues(resource: dict[str, Any], resource_type: str) -> list[Issue]:
    """Every primitive of ``resource`` whose JSON type its definition does not allow."""
    model = _resource_model(resource_type)
    issues: list[Issue] = []
    if model is not None:
        _object(resource, model, [resource_type], issues)
    return issues[:MAX_ISSUES]


def _bad_primitive(kind: str, value: Any) -> bool:
    if kind == "string":
        return type(value) is not str
    if kind == "boolean":
        return type(value) is not bool
    if kind == "integer":  # -0 is kept as written, and is a whole number too
        return type(value) is not int and not (
            type(value) is Number and value.text.lstrip("-").isdigit()
        )
    return type(value) is bool or not isinstance(value, int | float | Decimal)


def _primitive_issue(kind: str, value: Any, at: str, issues: list[Issue]) -> None:
    if _bad_primitive(kind, value):
        issues.append(Issue(f"Expected {_EXPECTED[kind]} at {at}", "value", expression=(at,)))
    elif isinstance(value, Decimal) and not decimal_in_range(value):
        issues.append(
            Issue(
                f"The decimal at {at} is out of range (exponent beyond ±{DECIMAL_EXPONENT_LIMIT})",
                "value",
                expression=(at,),
            )
        )


def _object(node: dict[str, Any], model: Any, where: list[str], issues: list[Issue]) -> None:
    # Runs on every stored resource: the location (``where``, a stack of parts) is
    # only joined into a string for a problem.
    fields = _fields(model)
    for key, value in node.items():
        spec = fields.get(key)
        if spec is None or value is None:
            continue  # unknown elements and nulls: the model and the shape check say
        kind, many, target = spec
        if kind in _EXPECTED:
            if many and type(value) is list:
                for index, item in enumerate(value):
                    if item is not None and (_bad_primitive(kind, item) or type(item) is Number):
                        at = "".join(where) + f".{key}[{index}]"
                        _primitive_issue(kind, item, at, issues)
            elif _bad_primitive(kind, value) or type(value) is Number:
                _primitive_issue(kind, value, "".join(where) + f".{key}", issues)
        elif kind == "complex":
            if type(value) is dict:
                where.append(f".{key}")
                _object(value, target, where, issues)
                where.pop()
            elif many and type(value) is list:
                for index, item in enumerate(value):
                    if type(item) is dict:
                        where.append(f".{key}[{index}]")
                        _object(item, target, where, issues)
                        where.pop()
        elif kind == "resource":
            for index, item in enumerate(value if many and type(value) is list else [value]):
                if type(item) is dict:
                    inner = _resource_model(str(item.get("resourceType")))
                    if inner is not None:
                        at = f".{key}[{index}]" if many else f".{key}"
                        where.append(f"{at}({item.get('resourceType')})")
                        _object(item, inner, where, issues)
                        where.pop()
        elif kind == "sibling":
            _sibling(value, fields.get(key[1:]), "".join(where) + f".{key}", issues)
        if len(issues) >= MAX_ISSUES:
            return


def _sibling(value: Any, primitive: Any, where: str, issues: list[Issue]) -> None:
    repeats = primitive is not None and primitive[1]
    if repeats and isinstance(value, list):
        if all(v is None or isinstance(v, dict) for v in value):
            return
    elif isinstance(value, dict):
        return
    expected = "an array of objects and nulls" if repeats else "an object"
    issues.append(Issue(f"Expected {expected} at {where}", "structure", expression=(where,)))
