"""The R4 SearchParameter definitions, compiled once per process.

Loaded from ``fhir_profiles/search-parameters.json`` (the official R4 bundle).
Each (resource type, code) gets a compiled extractor (:mod:`ehr_service.fhir.fhirpath`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import orjson

from ehr_service.fhir.fhirpath import Extractor, compile_expression, compile_relative
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
        bundle = orjson.loads((profiles_dir / "search-parameters.json").read_bytes())
        definitions = [entry["resource"] for entry in bundle["entry"]]
        choices = frozenset(orjson.loads((profiles_dir / "r4-choice-elements.json").read_bytes()))
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
                )
        return cls(parameters)


@cache
def load_registry(profiles_dir: Path) -> SearchParameterRegistry:
    return SearchParameterRegistry.load(profiles_dir)
