"""Validate R4 resources against the official StructureDefinitions.

For the R4 resource types that fhir.resources R4B has no model for (R4B
replaced or dropped them) the element trees of their StructureDefinition
snapshots (``fhir_profiles/r4-structures.json``, built by
``fhir_profiles/_build_structures.py``) drive the check: unknown elements,
cardinality, JSON array vs. single value (R4 §2.6.2), choice types, primitive
JSON types and regexes, nested datatypes and backbone elements. Every problem
is reported with its location.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

import orjson

from ehr_service.fhir.errors import Issue
from ehr_service.locations import shipped_dir

STRUCTURES_FILE = shipped_dir("fhir_profiles") / "r4-structures.json"
_INTEGER_TYPES = {"integer", "positiveInt", "unsignedInt"}


class _Definitions:
    def __init__(self, document: dict[str, Any]) -> None:
        self.resources: frozenset[str] = frozenset(document["resources"])
        self.structures: dict[str, dict[str, list[Any]]] = document["structures"]
        self.regexes = {
            name: re.compile(regex) if regex else None
            for name, regex in document["primitives"].items()
        }
        # children[type][parent path] -> {element name: definition}
        self.children: dict[str, dict[str, dict[str, list[Any]]]] = {}
        for type_name, elements in self.structures.items():
            by_parent: dict[str, dict[str, list[Any]]] = {}
            for path, definition in elements.items():
                parent, _, name = path.rpartition(".")
                by_parent.setdefault(parent, {})[name] = definition
            self.children[type_name] = by_parent


@cache
def _definitions(path: Path = STRUCTURES_FILE) -> _Definitions:
    return _Definitions(orjson.loads(path.read_bytes()))


def structure_only_types() -> frozenset[str]:
    return _definitions().resources


def validate_structure(resource: dict[str, Any]) -> list[Issue]:
    """Every structural problem of a resource of one of the structure-only types."""
    definitions = _definitions()
    resource_type = resource.get("resourceType")
    if resource_type not in definitions.structures:
        return [
            Issue(
                f"No structure definition for {resource_type}",
                "not-supported",
                expression=(str(resource_type),),
            )
        ]
    issues: list[Issue] = []
    _check_object(
        definitions, resource, str(resource_type), "", str(resource_type), issues, is_resource=True
    )
    return issues


def _match_child(children: dict[str, list[Any]], key: str) -> tuple[str, list[Any], str] | None:
    """(element name, definition, type code) for a JSON key, handling ``value[x]``."""
    if key in children and not key.endswith("[x]"):
        definition = children[key]
        codes = definition[2]
        return key, definition, codes[0] if len(codes) == 1 else ""
    for name, definition in children.items():
        if name.endswith("[x]") and key.startswith(name[:-3]):
            suffix = key[len(name) - 3 :]
            for code in definition[2]:
                if code[:1].upper() + code[1:] == suffix:
                    return name, definition, code
    return None


def _check_object(
    definitions: _Definitions,
    node: dict[str, Any],
    type_name: str,
    path: str,
    where: str,
    issues: list[Issue],
    *,
    is_resource: bool = False,
) -> None:
    children = definitions.children.get(type_name, {}).get(path, {})
    if not is_resource and type_name not in {"Element", "BackboneElement"}:
        # Every datatype and backbone element also allows id/extension (inherited).
        base = definitions.children["BackboneElement"][""]
        children = {**base, **children}
    seen: set[str] = set()
    for key, value in node.items():
        if is_resource and key == "resourceType":
            continue
        if key.startswith("_"):
            if _match_child(children, key[1:]) is None:
                issues.append(
                    Issue(f"Unknown element '{key}'", "structure", expression=(f"{where}.{key}",))
                )
            continue
        matched = _match_child(children, key)
        if matched is None:
            issues.append(
                Issue(f"Unknown element '{key}'", "structure", expression=(f"{where}.{key}",))
            )
            continue
        name, definition, code = matched
        if name in seen and name.endswith("[x]"):
            issues.append(
                Issue(
                    f"Only one type of '{name}' is allowed",
                    "structure",
                    expression=(f"{where}.{key}",),
                )
            )
        seen.add(name)
        many = definition[1] != "1"
        if many != isinstance(value, list):
            issues.append(
                Issue(
                    f"'{key}' must be {'an array' if many else 'a single value, not an array'}",
                    "structure",
                    expression=(f"{where}.{key}",),
                )
            )
            continue
        items = value if isinstance(value, list) else [value]
        for index, item in enumerate(items):
            item_where = f"{where}.{key}[{index}]" if many else f"{where}.{key}"
            _check_value(
                definitions,
                item,
                type_name,
                _join(path, name),
                definition,
                code,
                item_where,
                issues,
            )
    for name, definition in children.items():
        if definition[0] >= 1 and name not in seen and f"_{name}" not in node:
            issues.append(
                Issue(f"Element '{name}' is required", "required", expression=(f"{where}.{name}",))
            )


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _check_value(
    definitions: _Definitions,
    value: Any,
    type_name: str,
    path: str,
    definition: list[Any],
    code: str,
    where: str,
    issues: list[Issue],
) -> None:
    content_reference = definition[3]
    if content_reference:
        _expect_object(definitions, value, type_name, content_reference, where, issues)
    elif code in definitions.regexes:
        _check_primitive(definitions, value, code, where, issues)
    elif code in {"BackboneElement", "Element"} and definitions.children[type_name].get(path):
        _expect_object(definitions, value, type_name, path, where, issues)
    elif code == "Resource":
        if not isinstance(value, dict) or not isinstance(value.get("resourceType"), str):
            issues.append(
                Issue(
                    "A contained resource must be an object with a resourceType",
                    "structure",
                    expression=(where,),
                )
            )
        elif value["resourceType"] in definitions.resources:
            _check_object(
                definitions, value, value["resourceType"], "", where, issues, is_resource=True
            )
    elif code in definitions.structures:
        _expect_object(definitions, value, code, "", where, issues)


def _expect_object(
    definitions: _Definitions,
    value: Any,
    type_name: str,
    path: str,
    where: str,
    issues: list[Issue],
) -> None:
    if not isinstance(value, dict):
        issues.append(Issue("Expected an object", "structure", expression=(where,)))
        return
    _check_object(definitions, value, type_name, path, where, issues)


def _check_primitive(
    definitions: _Definitions, value: Any, code: str, where: str, issues: list[Issue]
) -> None:
    if code == "boolean":
        valid_json = isinstance(value, bool)
    elif code in _INTEGER_TYPES:
        valid_json = isinstance(value, int) and not isinstance(value, bool)
    elif code == "decimal":
        valid_json = isinstance(value, int | float) and not isinstance(value, bool)
    else:
        valid_json = isinstance(value, str)
    if not valid_json:
        issues.append(
            Issue(f"Expected a JSON value of FHIR type {code}", "value", expression=(where,))
        )
        return
    regex = definitions.regexes.get(code)
    text = value if isinstance(value, str) else str(value).lower()
    if regex is not None and not regex.fullmatch(text):
        issues.append(Issue(f"Not a valid {code}", "value", expression=(where,)))
