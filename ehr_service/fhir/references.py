"""References between resources (FHIR R4 §2.3.0, Resource references).

Parsing of literal references and the one walk that rewrites placeholder
references (``urn:uuid:``, ``urn:oid:`` or absolute fullUrls) when a
transaction assigns server identities (R4 §3.1.0.11.2, Transaction processing).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ehr_service.fhir.resource_types import R4_RESOURCE_TYPES

ID_PATTERN = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_RELATIVE = re.compile(
    r"(?:(?P<base>https?://.+)/)?(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})"
    r"(?:/_history/(?P<version>[A-Za-z0-9\-.]{1,64}))?"
)
PLACEHOLDER_PREFIXES = ("urn:uuid:", "urn:oid:")


@dataclass(frozen=True, slots=True)
class LiteralReference:
    resource_type: str
    resource_id: str
    version_id: str | None = None
    base: str | None = None

    @property
    def relative(self) -> str:
        return f"{self.resource_type}/{self.resource_id}"


def parse_reference(value: str) -> LiteralReference | None:
    """``Type/id[/_history/v]``, optionally behind an absolute base; else None."""
    match = _RELATIVE.fullmatch(value)
    if match is None or match["type"] not in R4_RESOURCE_TYPES:
        return None
    return LiteralReference(match["type"], match["id"], match["version"], match["base"])


def is_valid_id(value: str) -> bool:
    return ID_PATTERN.fullmatch(value) is not None


def rewrite_references(node: Any, mapping: dict[str, str]) -> list[str]:
    """Replace, in place, every string equal to a key of ``mapping``.

    Covers ``Reference.reference`` and uri-typed elements (placeholders may be
    used in both). Returns the ``reference`` values the mapping cannot resolve
    that need resolving: placeholders (``urn:uuid:``/``urn:oid:``) and
    conditional references (``Patient?identifier=...``), in one walk.
    """
    unresolved: list[str] = []
    stack: list[Any] = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, dict):
            for key, value in current.items():
                if isinstance(value, str):
                    target = mapping.get(value)
                    if target is not None:
                        current[key] = target
                    elif key == "reference" and (
                        value.startswith(PLACEHOLDER_PREFIXES)
                        or ("?" in value and is_conditional_reference(value))
                    ):
                        unresolved.append(value)
                elif isinstance(value, dict | list):
                    stack.append(value)
        elif isinstance(current, list):
            for index, value in enumerate(current):
                if isinstance(value, str):
                    target = mapping.get(value)
                    if target is not None:
                        current[index] = target
                elif isinstance(value, dict | list):
                    stack.append(value)
    return unresolved


_CONDITIONAL = re.compile(r"[A-Z][A-Za-z]+\?.+")


def is_conditional_reference(value: str) -> bool:
    """A ``Reference.reference`` that is a search (``Patient?identifier=a|b``)."""
    return _CONDITIONAL.fullmatch(value) is not None


def reference_values(node: Any) -> list[str]:
    """Every ``reference`` string in a resource, at any depth (contained included)."""
    found: list[str] = []
    stack: list[Any] = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, dict):
            for key, value in current.items():
                if key == "reference" and isinstance(value, str):
                    found.append(value)
                elif isinstance(value, dict | list):
                    stack.append(value)
        elif isinstance(current, list):
            stack.extend(v for v in current if isinstance(v, dict | list))
    return found
