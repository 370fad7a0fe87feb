"""The R4 SearchParameter definitions, compiled once per process.

Loaded from ``fhir_profiles/search-parameters.json`` (the official R4 bundle).
Each (resource type, code) gets a compiled extractor (:mod:`ehr_service.fhir.fhirpath`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

from ehr_service.fhir import jsonio
from ehr_service.fhir.fhirpath import (
    Extractor,
    applicable_parts,
    compile_expression,
    compile_relative,
)
from ehr_service.fhir.resource_types import R4_RESOURCE_TYPES

# Parameters every type has, answered from columns of the resource table.
COLUMN_PARAMETERS = {"_id": "token", "_lastUpdated": "date"}
# Types this server indexes (special and query-only parameters are not).
INDEXED_TYPES = frozenset(
    {"string", "token", "date", "reference", "quantity", "number", "uri", "composite"}
)


@dataclass(frozen=True, slots=True)
class Component:
    definition_url: str
    extract: Callable[[Any, dict[str, Any]], list[Any]]
    type: str = ""  # filled from the component's own definition


@dataclass(frozen=True, slots=True)
class SearchParameter:
    code: str
    type: str
    resource_type: str
    expression: str
    url: str
    targets: tuple[str, ...] = ()
    extract: Extractor | None = None
    components: tuple[Component, ...] = field(default_factory=tuple)
    # Index parameter names holding this parameter's rows: its own code, or, for a
    # parameter that is the union of others (Observation combo-code = code |
    # component-code), theirs, so the union is searched without being stored twice.
    stored_as: tuple[str, ...] = ()


class SearchParameterRegistry:
    def __init__(self, parameters: dict[str, dict[str, SearchParameter]]) -> None:
        self._by_type = parameters
        self._indexed = {
            resource_type: tuple(p for p in by_code.values() if p.extract is not None)
            for resource_type, by_code in parameters.items()
        }

    def for_type(self, resource_type: str) -> dict[str, SearchParameter]:
        return self._by_type.get(resource_type, {})

    def get(self, resource_type: str, code: str) -> SearchParameter | None:
        return self._by_type.get(resource_type, {}).get(code)

    def indexed(self, resource_type: str) -> tuple[SearchParameter, ...]:
        """Parameters whose values are written to the index tables for this type."""
        return self._indexed.get(resource_type, ())

    @classmethod
    def load(cls, profiles_dir: Path) -> SearchParameterRegistry:
        bundle = jsonio.loads((profiles_dir / "search-parameters.json").read_bytes())
        definitions = [entry["resource"] for entry in bundle["entry"]]
        choices = frozenset(jsonio.loads((profiles_dir / "r4-choice-elements.json").read_bytes()))
        types_by_url = {d["url"]: d["type"] for d in definitions}
        parameters: dict[str, dict[str, SearchParameter]] = {t: {} for t in R4_RESOURCE_TYPES}
        for definition in definitions:
            kind = definition["type"]
            bases = definition.get("base", [])
            applies_to = R4_RESOURCE_TYPES if set(bases) & {"Resource", "DomainResource"} else bases
            components = tuple(
                Component(
                    c["definition"],
                    compile_relative(c["expression"]),
                    types_by_url.get(c["definition"], ""),
                )
                for c in definition.get("component", [])
            )
            for resource_type in applies_to:
                if resource_type not in parameters:
                    continue
                extract = None
                expression = definition.get("expression") or ""
                if (
                    kind in INDEXED_TYPES
                    and expression
                    and definition["code"] not in (COLUMN_PARAMETERS)
                ):
                    extract = compile_expression(expression, resource_type, choices)
                if kind == "composite" and len(components) != 2:
                    extract = None  # only two-part composites are indexed
                parameters[resource_type][definition["code"]] = SearchParameter(
                    code=definition["code"],
                    type=kind,
                    resource_type=resource_type,
                    expression=expression,
                    url=definition["url"],
                    targets=tuple(definition.get("target", [])),
                    extract=extract,
                    components=components,
                    stored_as=(definition["code"],) if extract is not None else (),
                )
        for resource_type, by_code in parameters.items():
            _alias_unions(resource_type, by_code)
        return cls(parameters)


def _alias_unions(resource_type: str, by_code: dict[str, SearchParameter]) -> None:
    """Mark parameters whose expression is exactly the union of other indexed
    parameters of the same kind as aliases of those (see ``stored_as``)."""
    keys = {}
    for code, parameter in by_code.items():
        if parameter.extract is not None:
            components = tuple(c.definition_url.rsplit("-", 1)[-1] for c in parameter.components)
            keys[code] = (
                parameter.type,
                components,
                applicable_parts(parameter.expression, resource_type),
            )
    for code in sorted(keys, key=lambda c: (len(keys[c][2]), c)):
        kind, components, parts = keys[code]
        if len(parts) < 2:
            continue
        covering = [
            other
            for other, (other_kind, other_components, other_parts) in keys.items()
            if other != code
            and other_kind == kind
            and other_components == components
            and other_parts < parts
            and by_code[other].extract is not None
        ]
        if covering and frozenset().union(*(keys[c][2] for c in covering)) == parts:
            by_code[code] = replace(by_code[code], extract=None, stored_as=tuple(sorted(covering)))


@cache
def load_registry(profiles_dir: Path) -> SearchParameterRegistry:
    return SearchParameterRegistry.load(profiles_dir)
