"""Structural validation of the R4 resource types that have no ``fhir.resources.R4B`` model.

The rules come from two places of the FHIR R4 (4.0.1) specification:

* the StructureDefinition snapshots (``snapshot.element``) of the 18 types in
  :data:`STRUCTURE_ONLY_TYPES` and of every datatype they use, reduced by
  ``fhir_profiles/_build_structures.py`` to ``fhir_profiles/r4-structures.json``:
  element names, min/max cardinality, type codes (choice ``[x]`` types),
  ``contentReference`` and the primitive types' regexes;
* the JSON representation, R4 §2.6.2: elements whose maximum cardinality is
  above 1 are always JSON arrays and the others never are; ``value[x]`` is sent
  as ``valueString``/``valueQuantity``...; boolean, integer and decimal are JSON
  booleans and numbers, other primitives strings; a primitive's id/extensions
  go in a ``_name`` sibling (an array aligned with the values, ``null`` where a
  side has nothing); empty objects, arrays and strings are not allowed.

The definitions are compiled once, on first use, into a graph of nodes keyed by
JSON property name, so a validation is one walk over the resource with dict
lookups and precompiled regexes. Every problem is reported, each with its
FHIRPath-like location (``MedicinalProduct.name[0].productName``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cache
from typing import Any

from ehr_service.fhir import jsonio
from ehr_service.fhir.errors import Issue
from ehr_service.fhir.json_types import decimal_in_range
from ehr_service.fhir.resource_types import R4_TYPES_WITHOUT_R4B_MODEL
from ehr_service.locations import shipped_dir

# In a source checkout this is Path(__file__).resolve().parents[2] / "fhir_profiles";
# shipped_dir also finds the copy bundled into the wheel.
STRUCTURES_FILE = shipped_dir("fhir_profiles") / "r4-structures.json"

STRUCTURE_ONLY_TYPES: frozenset[str] = R4_TYPES_WITHOUT_R4B_MODEL

# Deeper nesting is refused rather than risking RecursionError (two frames a level).
MAX_DEPTH = 100
# R4 §2.24 integer: a 32-bit signed value; positiveInt/unsignedInt narrow it by regex.
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1


@dataclass(slots=True, eq=False)
class _Primitive:
    name: str
    kind: str  # JSON kind (R4 §2.6.2): "string", "boolean", "integer" or "decimal"
    regex: re.Pattern[str] | None
    max_length: int | None


@dataclass(slots=True, eq=False)
class _Element:
    name: str  # as defined: "value[x]" for a choice
    min: int
    max: int | None  # None: unbounded ("*")
    xml_attr: bool  # Element.id, Extension.url: no `_name` sibling
    # JSON names with their `_name` siblings: (valueString, _valueString), ...
    keys: list[tuple[str, str]] = field(default_factory=list)
    many: bool = field(init=False)  # a JSON array (R4 §2.6.2: max above 1)
    choice: bool = field(init=False)

    def __post_init__(self) -> None:
        # Plain fields, not properties: read for every JSON property validated.
        self.many = self.max is None or self.max > 1
        self.choice = self.name.endswith("[x]")


@dataclass(slots=True, eq=False)
class _Node:
    """A complex datatype, resource or backbone element: what its JSON object may hold."""

    is_resource: bool
    slots: dict[str, _Slot] = field(default_factory=dict)
    required: list[_Element] = field(default_factory=list)


@dataclass(slots=True, eq=False)
class _Slot:
    """One JSON property name and what its value(s) must be."""

    element: _Element
    sibling_key: str  # "_" + the JSON name
    primitive: _Primitive | None = None
    node: _Node | None = None
    resource: bool = False  # a contained resource (type Resource)


class _Model:
    def __init__(self, document: dict[str, Any]) -> None:
        self.resources: frozenset[str] = frozenset(document["resources"])
        self.primitives = {
            name: _Primitive(
                name,
                spec["json"],
                re.compile(spec["regex"]) if "regex" in spec else None,
                spec.get("maxLength"),
            )
            for name, spec in document["primitives"].items()
        }
        types: dict[str, dict[str, Any]] = document["types"]
        # Nodes first (one per type and per inline backbone path), links second:
        # the graph is cyclic (Extension.extension, contentReference).
        self.nodes: dict[tuple[str, str], _Node] = {}
        for type_name, record in types.items():
            is_resource = record["kind"] == "resource"
            self.nodes[type_name, ""] = _Node(is_resource)
            for path in record["elements"]:
                parent = path.rpartition(".")[0]
                if parent and (type_name, parent) not in self.nodes:
                    self.nodes[type_name, parent] = _Node(False)
        for type_name, record in types.items():
            for path, spec in record["elements"].items():
                self._link(type_name, path, spec)

    def _link(self, type_name: str, path: str, spec: list[Any]) -> None:
        parent, _, name = path.rpartition(".")
        node = self.nodes[type_name, parent]
        low, high, codes = spec[0], spec[1], spec[2]
        extra: dict[str, Any] = spec[3] if len(spec) > 3 else {}
        element = _Element(
            name, low, None if high == "*" else int(high), bool(extra.get("xmlAttr"))
        )
        if low > 0:
            node.required.append(element)
        reference = extra.get("contentReference")
        if reference:  # "#Type.a.b": same definition as element a.b of this type
            target = self.nodes[type_name, reference.lstrip("#").split(".", 1)[1]]
            self._add(node, name, _Slot(element, f"_{name}", node=target))
            return
        if (type_name, path) in self.nodes:  # inline BackboneElement / Element
            inline = self.nodes[type_name, path]
            self._add(node, name, _Slot(element, f"_{name}", node=inline))
            return
        profiles: dict[str, str] = extra.get("profile", {})
        for code in codes:
            key = name[:-3] + code[0].upper() + code[1:] if element.choice else name
            if code in self.primitives:
                slot = _Slot(element, f"_{key}", primitive=self.primitives[code])
            elif code == "Resource":
                slot = _Slot(element, f"_{key}", resource=True)
            else:
                target = self.nodes[profiles.get(code, code), ""]
                slot = _Slot(element, f"_{key}", node=target)
            self._add(node, key, slot)

    @staticmethod
    def _add(node: _Node, key: str, slot: _Slot) -> None:
        slot.element.keys.append((key, slot.sibling_key))
        node.slots[key] = slot


@cache
def _model() -> _Model:
    return _Model(jsonio.loads(STRUCTURES_FILE.read_bytes()))


def structure_only_types() -> frozenset[str]:
    """The resource types the shipped definitions cover (should be STRUCTURE_ONLY_TYPES)."""
    return _model().resources


def validate_structure(resource: dict[str, Any], resource_type: str | None = None) -> list[Issue]:
    """Every structural problem of a resource of one of :data:`STRUCTURE_ONLY_TYPES`.

    ``resource_type``, when given, is the type the resource must declare.
    Returns an empty list when the resource is valid.
    """
    walker = _Walker(_model())
    declared = resource.get("resourceType") if isinstance(resource, dict) else None
    where = resource_type or (declared if isinstance(declared, str) else "Resource")
    walker.resource(resource, where, resource_type, 0)
    return walker.issues


def _label(key: str) -> str:
    # Property names come from the client: keep diagnostics short.
    return key if len(key) <= 64 else key[:61] + "..."


class _Walker:
    __slots__ = ("issues", "model", "too_deep")

    def __init__(self, model: _Model) -> None:
        self.model = model
        self.issues: list[Issue] = []
        self.too_deep = False  # report the depth limit once, not once per sibling

    def issue(self, code: str, diagnostics: str, where: str) -> None:
        self.issues.append(Issue(diagnostics, code, expression=(where,)))

    def resource(self, value: Any, where: str, expected: str | None, depth: int) -> None:
        if not isinstance(value, dict):
            self.issue("structure", "A resource must be a JSON object", where)
            return
        declared = value.get("resourceType")
        if declared is None:
            self.issue("required", "The resource has no resourceType", f"{where}.resourceType")
            return
        if not isinstance(declared, str):
            self.issue("value", "resourceType must be a string", f"{where}.resourceType")
            return
        if expected is not None and declared != expected:
            self.issue("invalid", f"resourceType must be '{expected}'", f"{where}.resourceType")
            return
        node = self.model.nodes.get((declared, ""))
        if node is None or declared not in self.model.resources:
            self.issue(
                "not-supported",
                f"No structure definition for '{_label(declared)}'",
                f"{where}.resourceType",
            )
            return
        self.object(value, node, where, depth)

    def object(self, obj: dict[str, Any], node: _Node, where: str, depth: int) -> None:
        if not obj:
            self.issue("structure", "Empty objects are not allowed in FHIR JSON", where)
            return
        if depth > MAX_DEPTH:
            if not self.too_deep:
                self.issue("structure", f"Nested more than {MAX_DEPTH} levels deep", where)
                self.too_deep = True
            return
        chosen: dict[int, str] = {}  # id(choice element) -> the JSON name used
        for key, value in obj.items():
            if key == "resourceType" and node.is_resource:
                continue
            sibling = key[:1] == "_"
            name = key[1:] if sibling else key
            slot = node.slots.get(name)
            path = f"{where}.{key}"
            if slot is None or (sibling and (slot.primitive is None or slot.element.xml_attr)):
                self.issue("structure", f"Unknown element '{_label(key)}'", path)
                continue
            element = slot.element
            if element.choice:
                first = chosen.setdefault(id(element), name)
                if first != name:
                    self.issue(
                        "structure",
                        f"Only one of '{element.name}' is allowed (already have '{first}')",
                        path,
                    )
            if element.max == 0:
                self.issue("structure", f"Element '{name}' is not allowed here", path)
            elif sibling:
                self.sibling(value, element, obj.get(name), path)
            else:
                self.property(value, slot, obj.get(slot.sibling_key), path, depth)
        for element in node.required:
            count = 0
            for name, sibling_name in element.keys:
                value = obj.get(name)
                if value is None:
                    value = obj.get(sibling_name)  # an extension-only primitive counts
                if value is not None:
                    count += len(value) if isinstance(value, list) else 1
            if count < element.min:
                self.issue(
                    "required",
                    f"Element '{element.name}' is required"
                    + (f" at least {element.min} times" if element.min > 1 else ""),
                    f"{where}.{element.name}",
                )

    def property(self, value: Any, slot: _Slot, sibling: Any, path: str, depth: int) -> None:
        element = slot.element
        if not isinstance(value, list):
            if element.many:
                self.issue("structure", f"'{element.name}' must be a JSON array", path)
            self.value(value, slot, path, depth)
            return
        if not value:
            self.issue("structure", "Empty arrays are not allowed in FHIR JSON", path)
            return
        if not element.many:
            self.issue("structure", f"'{element.name}' must be a single value, not an array", path)
        elif element.max is not None and len(value) > element.max:
            self.issue("structure", f"'{element.name}' allows at most {element.max} items", path)
        extended = sibling if slot.primitive is not None and isinstance(sibling, list) else ()
        for index, item in enumerate(value):
            if item is None and index < len(extended) and isinstance(extended[index], dict):
                continue  # this repetition has only an id/extensions (in `_name`)
            self.value(item, slot, f"{path}[{index}]", depth)

    def value(self, value: Any, slot: _Slot, where: str, depth: int) -> None:
        if value is None:
            self.issue("structure", "null is not allowed here in FHIR JSON", where)
        elif slot.primitive is not None:
            self.primitive(value, slot.primitive, where)
        elif slot.resource:
            declared = value.get("resourceType") if isinstance(value, dict) else None
            if not isinstance(declared, str):
                self.issue(
                    "structure",
                    "A contained resource must be a JSON object with a string resourceType",
                    where,
                )
            elif declared in self.model.resources:
                self.resource(value, where, None, depth + 1)
        elif slot.node is not None:
            if isinstance(value, dict):
                self.object(value, slot.node, where, depth + 1)
            else:
                self.issue("structure", "Expected a JSON object", where)

    def primitive(self, value: Any, primitive: _Primitive, where: str) -> None:
        kind = primitive.kind
        if kind == "string":
            if not isinstance(value, str):
                self.issue("value", f"Expected a JSON string ({primitive.name})", where)
            elif not value:
                self.issue("structure", "Empty strings are not allowed in FHIR JSON", where)
            elif primitive.max_length is not None and len(value) > primitive.max_length:
                self.issue(
                    "value", f"At most {primitive.max_length} characters ({primitive.name})", where
                )
            elif primitive.regex is not None and primitive.regex.fullmatch(value) is None:
                self.issue("value", f"Not a valid {primitive.name}", where)
        elif kind == "boolean":
            if not isinstance(value, bool):
                self.issue("value", f"Expected JSON true or false ({primitive.name})", where)
        elif isinstance(value, bool) or not isinstance(value, int | float | Decimal):
            self.issue("value", f"Expected a JSON number ({primitive.name})", where)
        elif kind == "integer":
            if not isinstance(value, int):
                self.issue("value", f"Expected a whole number ({primitive.name})", where)
            elif not _INT_MIN <= value <= _INT_MAX or (
                primitive.regex is not None and primitive.regex.fullmatch(str(value)) is None
            ):
                self.issue("value", f"Not a valid {primitive.name}", where)
        elif (isinstance(value, Decimal) and not decimal_in_range(value)) or (
            isinstance(value, float) and not math.isfinite(value)
        ):
            self.issue("value", f"Not a valid {primitive.name}", where)

    def sibling(self, value: Any, element: _Element, primitive: Any, path: str) -> None:
        """The `_name` of a primitive: object, or array of objects/nulls (R4 §2.6.2.1)."""
        if not element.many:
            if isinstance(value, dict):
                if not value:
                    self.issue("structure", "Empty objects are not allowed in FHIR JSON", path)
            else:
                self.issue("structure", "Expected a JSON object (id and extensions)", path)
            return
        if not isinstance(value, list):
            self.issue("structure", f"'_{element.name}' must be a JSON array", path)
            return
        if not value:
            self.issue("structure", "Empty arrays are not allowed in FHIR JSON", path)
            return
        values = primitive if isinstance(primitive, list) else ()
        if isinstance(primitive, list) and len(primitive) != len(value):
            self.issue(
                "structure", f"'_{element.name}' must have as many items as '{element.name}'", path
            )
        for index, item in enumerate(value):
            where = f"{path}[{index}]"
            if item is None:
                if index >= len(values) or values[index] is None:
                    self.issue("structure", "null is not allowed here in FHIR JSON", where)
            elif not isinstance(item, dict):
                self.issue("structure", "Expected a JSON object or null", where)
            elif not item:
                self.issue("structure", "Empty objects are not allowed in FHIR JSON", where)
