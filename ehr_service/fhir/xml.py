"""The FHIR XML format (R4 §2.6.1) to and from the JSON format the service stores.

Both directions walk the element definitions of ``fhir_profiles/r4-xml.json``
(built from the official StructureDefinitions by ``fhir_profiles/_build_xml.py``):
element order, which elements repeat, choice types, attributes and the JSON kind
of every primitive. Values keep their lexical form both ways (a decimal ``1.10``
stays ``1.10``, an instant keeps its offset), so JSON → XML → JSON gives back the
same JSON. Stored JSON is converted on the way out; XML bodies are converted to
JSON bytes on the way in and then take the JSON path (validation included).

XML from callers is parsed with entity resolution, DTD loading and network access
off; a document with a DOCTYPE is refused (R4 §2.6.1 forbids DTDs).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from typing import Any

import orjson
from lxml import etree

from ehr_service.fhir.errors import Category, FhirError
from ehr_service.locations import shipped_dir

FHIR_NS = "http://hl7.org/fhir"
XHTML_NS = "http://www.w3.org/1999/xhtml"
TABLE_FILE = shipped_dir("fhir_profiles") / "r4-xml.json"
MAX_DEPTH = 100
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_INTEGER = re.compile(r"-?(?:0|[1-9][0-9]*)")
_XML_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*")


@dataclass(frozen=True, slots=True)
class _Child:
    json_name: str  # "valueQuantity", "given"
    repeats: bool
    type: str  # "Quantity", "string", "@contact", "Resource"
    attribute: bool
    xhtml: bool


@dataclass(frozen=True, slots=True)
class _Table:
    primitives: dict[str, str]
    resources: frozenset[str]
    # (type, path) -> children in definition order, choices expanded
    children: dict[tuple[str, str], tuple[_Child, ...]]


def _too_deep() -> FhirError:
    return FhirError.of(Category.INCORRECT, "The content is nested too deeply", code="too-costly")


def _choice_name(base: str, type_code: str) -> str:
    return base + type_code[0].upper() + type_code[1:]


@cache
def _table() -> _Table:
    raw = json.loads(TABLE_FILE.read_text(encoding="utf-8"))
    children: dict[tuple[str, str], tuple[_Child, ...]] = {}
    for type_name, paths in raw["types"].items():
        for path, entries in paths.items():
            out: list[_Child] = []
            for entry in entries:
                name, repeats, types = entry[0], bool(entry[1]), entry[2]
                flags = entry[3] if len(entry) > 3 else ""
                if name.endswith("[x]"):
                    base = name[:-3]
                    out.extend(
                        _Child(_choice_name(base, t), repeats, t, False, False) for t in types
                    )
                else:
                    kind = types[0] if types else "string"
                    out.append(_Child(name, repeats, kind, "a" in flags, "x" in flags))
            children[(type_name, path)] = tuple(out)
    return _Table(raw["primitives"], frozenset(raw["resources"]), children)


def _scope(type_name: str, path: str, child: _Child) -> tuple[str, str]:
    """The (type, path) whose children describe ``child``'s content."""
    if child.type.startswith("@"):
        return type_name, child.type[1:]
    return child.type, ""


def is_resource_type(name: str) -> bool:
    return name in _table().resources


# --- JSON -> XML -------------------------------------------------------------------


class _Lexical(str):
    """A JSON number kept as written."""


def _loads_lexical(raw: bytes) -> Any:
    return json.loads(raw, parse_float=_Lexical, parse_int=_Lexical)


# Characters XML 1.0 cannot carry (§2.2); JSON strings can (an error message quoting
# a caller's bytes, say). They are sent as U+FFFD.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _text(value: Any) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    text = str(value)
    return _NOT_XML.sub("\ufffd", text) if _NOT_XML.search(text) else text


def _xhtml(parent: etree._Element, tag: str, value: Any) -> None:
    try:
        div = etree.fromstring(str(value).encode("utf-8"), _parser())
    except etree.XMLSyntaxError:
        div = etree.Element(f"{{{XHTML_NS}}}div", nsmap={None: XHTML_NS})
        div.text = _text(value)
    parent.append(div)


def _primitive(
    parent: etree._Element, child: _Child, value: Any, extra: Any, type_name: str
) -> None:
    node = etree.SubElement(parent, f"{{{FHIR_NS}}}{child.json_name}")
    if isinstance(extra, dict):
        if "id" in extra:
            node.set("id", _text(extra["id"]))
        for ext in extra.get("extension") or ():
            _complex(node, "extension", ext, ("Extension", ""), 1)
    if value is not None:
        node.set("value", _text(value))


def _complex(
    parent: etree._Element, tag: str, value: Any, scope: tuple[str, str], depth: int
) -> None:
    node = etree.SubElement(parent, f"{{{FHIR_NS}}}{tag}")
    if scope[0] == "Resource":
        _resource(node, value, depth + 1)
    else:
        _fill(node, value, scope, depth + 1)


def _resource(parent: etree._Element | None, value: dict[str, Any], depth: int) -> etree._Element:
    resource_type = str(value.get("resourceType", ""))
    if parent is None:
        node = etree.Element(f"{{{FHIR_NS}}}{resource_type}", nsmap={None: FHIR_NS})
    else:
        node = etree.SubElement(parent, f"{{{FHIR_NS}}}{resource_type}")
    _fill(node, value, (resource_type, ""), depth + 1)
    return node


def _fill(node: etree._Element, value: Any, scope: tuple[str, str], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise _too_deep()
    if not isinstance(value, dict):
        node.set("value", _text(value))
        return
    table = _table()
    known = table.children.get(scope, ())
    seen = {"resourceType"}
    for child in known:
        name = child.json_name
        item = value.get(name)
        extra = value.get("_" + name)
        if item is None and extra is None:
            continue
        seen.update((name, "_" + name))
        if child.attribute:
            node.set(name, _text(item))
        elif child.xhtml:
            _xhtml(node, name, item)
        elif child.type in table.primitives:
            if child.repeats and isinstance(item or extra, list):
                items = item if isinstance(item, list) else [None] * len(extra or ())
                extras = extra if isinstance(extra, list) else [None] * len(items)
                for one, one_extra in zip(items, extras, strict=False):
                    _primitive(node, child, one, one_extra, scope[0])
            else:
                _primitive(node, child, item, extra, scope[0])
        else:
            inner = _scope(scope[0], scope[1], child)
            for one in item if isinstance(item, list) else [item]:
                _complex(node, name, one, inner, depth)
    for name, item in value.items():  # not in the R4 definitions: kept, untyped
        if name not in seen and _XML_NAME.fullmatch(name):
            for one in item if isinstance(item, list) else [item]:
                _complex(node, name, one, ("", ""), depth)


class NotAResource(ValueError):  # noqa: N818 (a condition, not a failure)
    """JSON that is not a FHIR resource (a Bulk Data manifest, say) has no XML form."""


def json_to_xml(raw: bytes, pretty: bool = False) -> bytes:
    """A JSON resource (bytes as stored or built) as FHIR XML."""
    value = _loads_lexical(raw)
    if not isinstance(value, dict) or not is_resource_type(str(value.get("resourceType"))):
        raise NotAResource("not a FHIR resource")
    root = _resource(None, value, 0)
    if pretty:
        etree.indent(root, space="  ")
    out: bytes = etree.tostring(root, encoding="utf-8", xml_declaration=True)
    return out


# --- XML -> JSON -------------------------------------------------------------------


@cache
def _parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        remove_comments=True,
        remove_pis=True,
        huge_tree=False,
    )


def _bad(message: str, where: str) -> FhirError:
    return FhirError.of(Category.INCORRECT, message, code="structure", expression=[where])


def _local(element: etree._Element, where: str) -> str:
    qname = etree.QName(element)
    local: str = qname.localname
    if qname.namespace != FHIR_NS:
        raise _bad(f"Element '{local[:64]}' is not in the FHIR namespace", where)
    return local


def _primitive_value(text: str | None, kind: str, where: str) -> Any:
    if text is None:
        return None
    if kind == "boolean":
        if text not in {"true", "false"}:
            raise _bad("A boolean value must be 'true' or 'false'", where)
        return text == "true"
    if kind == "integer":
        if not _INTEGER.fullmatch(text):
            raise _bad("An integer value is not a valid integer", where)
        return int(text)
    if kind == "decimal":
        if not _NUMBER.fullmatch(text):
            raise _bad("A decimal value is not a valid decimal", where)
        return orjson.Fragment(text)
    return text


def _check_text(element: etree._Element, where: str) -> None:
    if element.text and element.text.strip():
        raise _bad("FHIR elements carry values in the 'value' attribute, not as text", where)
    for sub in element:
        if sub.tail and sub.tail.strip():
            raise _bad("Text between FHIR elements is not allowed", where)


def _read_primitive(element: etree._Element, kind: str, where: str, depth: int) -> tuple[Any, Any]:
    _check_text(element, where)
    extra: dict[str, Any] = {}
    for key, attr in element.attrib.items():
        if key == "id":
            extra["id"] = attr
        elif key != "value":
            raise _bad(f"Unknown attribute '{str(key)[:64]}'", where)
    extensions = []
    for index, sub in enumerate(element):
        if _local(sub, where) != "extension":
            raise _bad(f"A primitive element may hold only extensions, not '{sub.tag}'", where)
        extensions.append(
            _read_complex(sub, ("Extension", ""), f"{where}.extension[{index}]", depth + 1)
        )
    if extensions:
        extra["extension"] = extensions
    return _primitive_value(element.get("value"), kind, where), extra or None


def _read_resource(element: etree._Element, where: str, depth: int) -> dict[str, Any]:
    name = _local(element, where)
    if name not in _table().resources:
        raise _bad(f"'{name[:64]}' is not an R4 resource type", where)
    out: dict[str, Any] = {"resourceType": name}
    out.update(_read_complex(element, (name, ""), name, depth + 1))
    return out


def _read_complex(
    element: etree._Element, scope: tuple[str, str], where: str, depth: int
) -> dict[str, Any]:
    if depth > MAX_DEPTH:
        raise _too_deep()
    table = _table()
    by_name = {c.json_name: c for c in table.children.get(scope, ())}
    if not by_name:
        raise _bad(f"'{scope[0][:64]}' has no XML definition", where)
    _check_text(element, where)
    out: dict[str, Any] = {}
    for key, attr in element.attrib.items():
        child = by_name.get(str(key))
        if child is None or not child.attribute:
            raise _bad(f"Unknown attribute '{str(key)[:64]}'", where)
        out[child.json_name] = attr
    values: dict[str, list[Any]] = {}
    extras: dict[str, list[Any]] = {}
    for sub in element:
        qname = etree.QName(sub)
        xhtml = qname.namespace == XHTML_NS and qname.localname == "div"
        name = "div" if xhtml else _local(sub, where)
        child = by_name.get(name)
        at = f"{where}.{name}"
        if child is None or child.attribute:
            raise _bad(f"Unknown element '{name[:64]}'", at)
        if not child.repeats and (name in values or name in extras):
            raise _bad(f"Element '{name}' may occur only once", at)
        if child.xhtml != xhtml:
            raise _bad("Narrative.div must be an XHTML div", at)
        if child.xhtml:
            sub.tail = None
            values.setdefault(name, []).append(etree.tostring(sub, encoding="unicode"))
        elif child.type in table.primitives:
            value, extra = _read_primitive(sub, table.primitives[child.type], at, depth)
            values.setdefault(name, []).append(value)
            extras.setdefault(name, []).append(extra)
        elif child.type == "Resource":
            _check_text(sub, at)
            inner = list(sub)
            if len(inner) != 1 or sub.attrib:
                raise _bad(f"'{name}' must hold exactly one resource", at)
            values.setdefault(name, []).append(_read_resource(inner[0], at, depth))
        else:
            inner_scope = _scope(scope[0], scope[1], child)
            values.setdefault(name, []).append(_read_complex(sub, inner_scope, at, depth + 1))
    for name, items in values.items():
        repeats = by_name[name].repeats
        side = extras.get(name, [])
        if any(v is not None for v in items):
            out[name] = items if repeats else items[0]
        if any(e is not None for e in side):
            out["_" + name] = side if repeats else side[0]
    return out


def xml_to_json(raw: bytes) -> bytes:
    """An XML resource from a caller as JSON bytes; malformed XML or an element the
    R4 definitions do not know is a 400 naming where."""
    if not raw.strip():
        raise FhirError.of(Category.INCORRECT, "The request body is empty", code="structure")
    if b"<!DOCTYPE" in raw:  # refused before parsing: no entity is ever expanded
        raise FhirError.of(
            Category.INCORRECT, "FHIR XML may not contain a DOCTYPE", code="security"
        )
    try:
        root = etree.fromstring(raw, _parser())
    except etree.XMLSyntaxError as exc:
        raise FhirError.of(
            Category.INCORRECT,
            f"The request body is not well-formed XML: {exc.msg[:200]}",
            code="structure",
        ) from None
    if root.getroottree().docinfo.doctype:  # one in another encoding than UTF-8
        raise FhirError.of(
            Category.INCORRECT, "FHIR XML may not contain a DOCTYPE", code="security"
        )
    return orjson.dumps(_read_resource(root, "", 0))


def element_repeats(resource_type: str, names: list[str]) -> bool | None:
    """Whether the element reached by ``names`` from the resource repeats (max > 1),
    from the same definitions; None if the path leaves them."""
    table = _table()
    scope = (resource_type, "")
    child: _Child | None = None
    for position, name in enumerate(names):
        child = next((c for c in table.children.get(scope, ()) if c.json_name == name), None)
        if child is None:
            return None
        if position < len(names) - 1:
            if child.type == "Resource" or child.type in table.primitives:
                return None
            scope = _scope(scope[0], scope[1], child)
    return child.repeats if child is not None else None
