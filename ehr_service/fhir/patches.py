"""JSON merge patch (RFC 7396) and FHIRPath Patch (R4 §2.40, ``fhirpatch.html``).

Both are pure functions over the resource's JSON; the interaction validates the
result like any update. Messages name operations and paths, never values (they
may be protected data).

FHIRPath Patch paths use the FHIRPath that patches use in practice: dotted
element names with an optional leading resource type, indexers (``name[0]``),
``.where(element = 'literal')`` (and ``!=``; a dotted element; string, number or
boolean literals), ``.first()`` and ``.last()``. Anything else is a 400 naming
the path: it is never evaluated loosely.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

from ehr_service.fhir.errors import Category, FhirError
from ehr_service.fhir.xml import element_repeats

MERGE_PATCH_MEDIA_TYPE = "application/merge-patch+json"
_OPERATIONS = {"add", "insert", "delete", "replace", "move"}
_STEP = re.compile(
    r"\s*(?:(?P<name>[A-Za-z][A-Za-z0-9_]*)(?P<index>\[\d+\])?"
    r"|(?P<fn>first|last)\(\)"
    r"|where\(\s*(?P<field>[A-Za-z][A-Za-z0-9_.]*)\s*(?P<op>!?=)\s*"
    r"(?P<literal>'(?:[^'\\]|\\.)*'|-?\d+(?:\.\d+)?|true|false)\s*\))\s*"
)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 §2: objects merge member by member, ``null`` removes, anything else
    replaces (arrays whole)."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


# --- FHIRPath Patch ---------------------------------------------------------------


def _bad(message: str, where: str) -> FhirError:
    return FhirError.of(Category.INCORRECT, message, code="invalid", expression=[where])


def _cannot(message: str, where: str) -> FhirError:
    return FhirError.of(Category.UNPROCESSABLE, message, code="processing", expression=[where])


@dataclass(slots=True)
class _Node:
    parent: Any  # the dict holding it (None: the resource itself)
    key: str | None
    index: int | None  # its position when parent[key] is a list
    value: Any


def _literal(text: str) -> Any:
    if text.startswith("'"):
        return re.sub(r"\\(.)", r"\1", text[1:-1])
    if text in {"true", "false"}:
        return text == "true"
    return float(text) if "." in text else int(text)


def _field(value: Any, dotted: str) -> list[Any]:
    nodes = [value]
    for name in dotted.split("."):
        found: list[Any] = []
        for node in nodes:
            if isinstance(node, dict) and name in node:
                child = node[name]
                found.extend(child if isinstance(child, list) else [child])
        nodes = found
    return nodes


def _steps(path: str, where: str) -> list[re.Match[str]]:
    steps = []
    for raw in _split(path):
        match = _STEP.fullmatch(raw)
        if match is None:
            raise _bad(f"Path '{path[:200]}' is outside the FHIRPath this server patches", where)
        steps.append(match)
    return steps


def _split(path: str) -> list[str]:
    """Split at the dots outside parentheses and quotes."""
    parts, depth, quoted, current = [], 0, False, ""
    for char in path:
        if char == "'" and (not current.endswith("\\")):
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
        if char == "." and depth == 0 and not quoted:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return parts


def _evaluate(resource: dict[str, Any], path: str, where: str) -> tuple[list[_Node], list[str]]:
    """The nodes ``path`` selects, and the element names walked (for definitions)."""
    steps = _steps(path, where)
    if steps and steps[0]["name"] == resource.get("resourceType") and not steps[0]["index"]:
        steps = steps[1:]
    nodes = [_Node(None, None, None, resource)]
    names: list[str] = []
    for step in steps:
        if step["name"]:
            names.append(step["name"])
            found = []
            for node in nodes:
                if not isinstance(node.value, dict) or step["name"] not in node.value:
                    continue
                child = node.value[step["name"]]
                if isinstance(child, list):
                    found += [_Node(node.value, step["name"], i, c) for i, c in enumerate(child)]
                else:
                    found.append(_Node(node.value, step["name"], None, child))
            nodes = found
            if step["index"]:
                position = int(step["index"][1:-1])
                nodes = nodes[position : position + 1]
        elif step["fn"]:
            nodes = nodes[:1] if step["fn"] == "first" else nodes[-1:]
        else:
            wanted, equal = _literal(step["literal"]), step["op"] == "="
            nodes = [n for n in nodes if (wanted in _field(n.value, step["field"])) == equal]
    return nodes, names


def _one(nodes: list[_Node], path: str, where: str) -> _Node:
    if len(nodes) != 1:
        raise _cannot(
            f"Path '{path[:200]}' matches {len(nodes)} elements; this operation needs exactly one",
            where,
        )
    return nodes[0]


def _list_of(
    resource: dict[str, Any], path: str, where: str
) -> tuple[dict[str, Any], str, list[Any]]:
    """The list a path names (insert, move): its parent and key."""
    nodes, _names = _evaluate(resource, path, where)
    if not nodes:
        raise _cannot(f"Path '{path[:200]}' matches nothing", where)
    parent, key = nodes[0].parent, nodes[0].key
    if key is None or any(n.parent is not parent or n.key != key for n in nodes):
        raise _cannot(f"Path '{path[:200]}' does not name one list", where)
    items = parent[key]
    if not isinstance(items, list):
        raise _cannot(f"Path '{path[:200]}' does not name a repeating element", where)
    return parent, key, items


def _value_of(parts: list[dict[str, Any]], where: str) -> Any:
    """The ``value`` part: a value[x], or parts naming the members of a complex value."""
    values = [p for p in parts if p.get("name") == "value"]
    if len(values) != 1:
        raise _bad("The operation needs one 'value' part", where)
    return _part_value(values[0], where)


def _part_value(part: dict[str, Any], where: str) -> Any:
    typed = [k for k in part if k.startswith("value") or k == "resource"]
    if len(typed) == 1:
        return copy.deepcopy(part[typed[0]])
    if typed or not part.get("part"):
        raise _bad("A value part needs one value[x] or member parts", where)
    out: dict[str, Any] = {}
    for member in part["part"]:
        name = member.get("name")
        if not isinstance(name, str) or not name:
            raise _bad("A member part needs a name", where)
        value = _part_value(member, where)
        if name in out:  # a repeated member: a list
            out[name] = (out[name] if isinstance(out[name], list) else [out[name]]) + [value]
        else:
            out[name] = value
    return out


def _int_part(parts: dict[str, Any], name: str, where: str) -> int:
    value = parts.get(name, {}).get("valueInteger")
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _bad(f"The operation needs '{name}' as a non-negative valueInteger", where)
    return value


def _apply(resource: dict[str, Any], operation: dict[str, Any], where: str) -> None:
    parts_list = operation.get("part") or []
    parts: dict[str, Any] = {str(p.get("name")): p for p in parts_list if isinstance(p, dict)}
    kind = parts.get("type", {}).get("valueCode")
    path = parts.get("path", {}).get("valueString")
    if kind not in _OPERATIONS:
        raise _bad(f"The operation type must be one of {', '.join(sorted(_OPERATIONS))}", where)
    if not isinstance(path, str) or not path.strip():
        raise _bad("The operation needs a 'path' valueString", where)
    if kind == "delete":
        nodes, _ = _evaluate(resource, path, where)
        if not nodes:
            return  # R4: deleting what is not there is no error
        node = _one(nodes, path, where)
        _remove(node, path, where)
    elif kind == "replace":
        node = _one(_evaluate(resource, path, where)[0], path, where)
        if node.parent is None:
            raise _cannot("A patch may not replace the whole resource", where)
        value = _value_of(parts_list, where)
        if node.index is None:
            node.parent[node.key] = value
        else:
            node.parent[node.key][node.index] = value
    elif kind == "add":
        name = parts.get("name", {}).get("valueString")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
            raise _bad("An add needs a 'name' valueString naming an element", where)
        nodes, names = _evaluate(resource, path, where)
        node = _one(nodes, path, where)
        if not isinstance(node.value, dict):
            raise _cannot(f"Path '{path[:200]}' is not an element that can hold '{name}'", where)
        value = _value_of(parts_list, where)
        existing = node.value.get(name)
        repeats = element_repeats(str(resource.get("resourceType")), [*names, name])
        if isinstance(existing, list) or (existing is None and repeats):
            node.value[name] = [*(existing or []), value]
        elif existing is None:
            node.value[name] = value
        else:
            raise _cannot(f"'{name}' at '{path[:200]}' is present and does not repeat", where)
    elif kind == "insert":
        parent, key, items = _list_of(resource, path, where)
        index = _int_part(parts, "index", where)
        if index > len(items):
            raise _cannot(f"index {index} is beyond the {len(items)} elements", where)
        items.insert(index, _value_of(parts_list, where))
        parent[key] = items
    else:  # move
        parent, key, items = _list_of(resource, path, where)
        source, destination = (_int_part(parts, n, where) for n in ("source", "destination"))
        if source >= len(items) or destination >= len(items):
            raise _cannot(f"source or destination is beyond the {len(items)} elements", where)
        items.insert(destination, items.pop(source))


def _remove(node: _Node, path: str, where: str) -> None:
    if node.parent is None:
        raise _cannot("A patch may not delete the whole resource", where)
    if node.index is None:
        del node.parent[node.key]
        return
    items = node.parent[node.key]
    del items[node.index]
    if not items:
        del node.parent[node.key]


def apply_fhirpath_patch(current: dict[str, Any], parameters: dict[str, Any]) -> dict[str, Any]:
    """Apply a FHIRPath Patch (a Parameters resource) to a copy of ``current``."""
    operations = parameters.get("parameter")
    if not isinstance(operations, list) or not operations:
        raise _bad("A FHIRPath Patch needs at least one 'operation' parameter", "Parameters")
    patched = copy.deepcopy(current)
    for index, operation in enumerate(operations):
        where = f"Parameters.parameter[{index}]"
        if not isinstance(operation, dict) or operation.get("name") != "operation":
            raise _bad("Every parameter of a FHIRPath Patch is an 'operation'", where)
        _apply(patched, operation, where)
    return patched
