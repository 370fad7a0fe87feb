"""Parse a search request into typed criteria (R4 §3.1.1.1-5).

``name[:modifier]=value[,value]`` with prefixes, escapes (``\\,`` ``\\|``
``\\$``), comma OR and repeated-parameter AND; chained names
(``subject:Patient.name``); result parameters (``_count``, ``_sort``...) are
collected apart. Unknown parameters are reported, not silently dropped.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from ehr_service.fhir.errors import Category, FhirError
from ehr_service.fhir.resource_types import R4_RESOURCE_TYPES
from ehr_service.fhir.search.registry import (
    COLUMN_PARAMETERS,
    SearchParameter,
    SearchParameterRegistry,
)
from ehr_service.fhir.validation import CONTROL_CHARACTERS

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
PREFIXED_TYPES = {"number", "date", "quantity"}
RESULT_PARAMETERS = {
    "_count",
    "_sort",
    "_total",
    "_summary",
    "_elements",
    "_include",
    "_revinclude",
    "_cursor",
    "_format",
    "_pretty",
    "_contained",
    "_containedType",
}
MODIFIERS = {
    "string": {"exact", "contains", "missing"},
    "token": {"text", "not", "of-type", "missing", "above", "below", "in", "not-in"},
    "date": {"missing"},
    "reference": {"identifier", "missing"},
    "quantity": {"missing"},
    "number": {"missing"},
    "uri": {"above", "below", "missing"},
    "composite": {"missing"},
}
SUPPORTED_TOKEN_MODIFIERS = {"text", "not", "of-type", "missing"}
_SPLIT_COMMA = re.compile(r"(?<!\\),")
MAX_CHAIN_DEPTH = 4


@dataclass(frozen=True, slots=True)
class Criterion:
    """One ``name[:modifier]=v1,v2`` (values ORed); criteria of a search are ANDed."""

    parameter: SearchParameter
    modifier: str | None
    values: tuple[str, ...]
    chain: tuple[tuple[SearchParameter, str], ...] = ()  # (reference param, target type)


@dataclass(frozen=True, slots=True)
class ReverseChain:
    """``_has:Observation:patient:code=1234-5``."""

    source_type: str
    reference: SearchParameter
    criterion: Criterion


@dataclass(slots=True)
class SearchRequest:
    resource_type: str
    criteria: list[Criterion] = field(default_factory=list)
    reverse_chains: list[ReverseChain] = field(default_factory=list)
    result: dict[str, list[str]] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)

    def touched_types(self) -> list[str]:
        """Every resource type the search reads: its own, chain targets, _has sources."""
        types = [self.resource_type]
        for criterion in self.criteria:
            types.extend(target for _, target in criterion.chain)
        for reverse in self.reverse_chains:
            types.append(reverse.source_type)
            types.extend(target for _, target in reverse.criterion.chain)
        return types


def split_values(raw: str) -> tuple[str, ...]:
    return tuple(v.replace("\\,", ",") for v in _SPLIT_COMMA.split(raw))


def split_token(value: str) -> tuple[str | None, str]:
    """``system|code`` -> (system, code); ``|code`` -> ("", code); ``code`` -> (None, code)."""
    parts = re.split(r"(?<!\\)\|", value, maxsplit=1)
    if len(parts) == 1:
        return None, _unescape(parts[0])
    return _unescape(parts[0]), _unescape(parts[1])


def _unescape(value: str) -> str:
    return value.replace("\\|", "|").replace("\\$", "$").replace("\\\\", "\\")


def split_prefix(value: str) -> tuple[str, str]:
    if len(value) > 2 and value[:2] in PREFIXES and not value[2].isalpha():
        return value[:2], value[2:]
    return "eq", value


def _bad(message: str, name: str) -> FhirError:
    return FhirError.of(Category.INCORRECT, message, code="invalid", expression=[name])


# (system or None, code) -> the codes the index may hold instead (any of them
# matches, e.g. a blind token per scheme), or None: as is.
TokenCodeMap = Callable[[str | None, str], tuple[str, ...] | None]


class SearchParser:
    """``stored_code`` maps token values that are never stored as written (resident
    ID numbers, kept as blind tokens) to what the index holds."""

    def __init__(
        self, registry: SearchParameterRegistry, stored_code: TokenCodeMap | None = None
    ) -> None:
        self.registry = registry
        self.stored_code = stored_code

    def parse(self, resource_type: str, query: dict[str, list[str]]) -> SearchRequest:
        request = SearchRequest(resource_type)
        for name, raw_values in query.items():
            if CONTROL_CHARACTERS.search(name) or any(
                CONTROL_CHARACTERS.search(v) for v in raw_values
            ):
                raise _bad("Search parameters may not contain control characters", name[:64])
            base = name.split(":", 1)[0].split(".", 1)[0]
            if base in RESULT_PARAMETERS:
                request.result[name] = request.result.get(name, []) + raw_values
                continue
            if name.startswith("_has:"):
                for raw in raw_values:
                    request.reverse_chains.append(self._has(resource_type, name, raw))
                continue
            for raw in raw_values:
                criterion = self.criterion(resource_type, name, raw)
                if criterion is None:
                    request.unknown.append(name)
                    break
                request.criteria.append(criterion)
        return request

    def criterion(self, resource_type: str, name: str, raw: str) -> Criterion | None:
        """A criterion, or None for a parameter this type does not define."""
        head, _, rest = name.partition(".")
        code, _, modifier = head.partition(":")
        parameter = self.parameter(resource_type, code)
        if parameter is None:
            return None
        if rest:  # chaining: subject:Patient.name=x
            if parameter.type != "reference":
                raise _bad(f"'{code}' is not a reference: it cannot be chained", name)
            if name.count(".") > MAX_CHAIN_DEPTH:
                raise _bad(f"Chains are limited to {MAX_CHAIN_DEPTH} links", name)
            targets = [modifier] if modifier else list(parameter.targets)
            if modifier and modifier not in R4_RESOURCE_TYPES:
                raise _bad(f"'{modifier}' is not a resource type", name)
            candidates = {t: c for t in targets if (c := self._chained(t, rest, raw)) is not None}
            if len(candidates) != 1:
                raise _bad(
                    f"Chain '{name}' must name one target type (e.g. {code}:Patient.{rest})"
                    if candidates
                    else f"No target of '{code}' has a parameter '{rest}'",
                    name,
                )
            [(target, inner)] = candidates.items()
            return Criterion(
                inner.parameter, inner.modifier, inner.values, ((parameter, target), *inner.chain)
            )
        if modifier:
            allowed = MODIFIERS.get(parameter.type, set())
            if parameter.type == "reference" and modifier in R4_RESOURCE_TYPES:
                pass
            elif modifier not in allowed:
                raise _bad(
                    f"Modifier ':{modifier}' is not valid for {parameter.type} parameter '{code}'",
                    name,
                )
            elif parameter.type == "token" and modifier not in SUPPORTED_TOKEN_MODIFIERS:
                raise FhirError.of(
                    Category.NOT_IMPLEMENTED,
                    f"Modifier ':{modifier}' needs terminology services, "
                    "which this server does not offer",
                    code="not-supported",
                    expression=[name],
                )
        values = split_values(raw)
        if modifier == "missing" and values not in {("true",), ("false",)}:
            raise _bad(f"{name} takes true or false", name)
        if self.stored_code is not None and (
            (parameter.type == "token" and modifier in {"", "not", "of-type"})
            or (parameter.type == "reference" and modifier == "identifier")
        ):
            values = tuple(
                stored
                for v in values
                for stored in self._stored_token(v, of_type=modifier == "of-type")
            )
        return Criterion(parameter, modifier or None, values)

    def _stored_token(self, value: str, *, of_type: bool) -> tuple[str, ...]:
        """``system|code`` (or ``type-system|type-code|value``) as the index may keep
        it (several forms: any matches)."""
        assert self.stored_code is not None
        if of_type:
            head, bar, last = value.rpartition("|")
            if not bar:
                return (value,)
            stored = self.stored_code(None, _unescape(last))
            return (value,) if stored is None else tuple(f"{head}|{s}" for s in stored)
        system, code = split_token(value)
        stored = self.stored_code(system or None, code)
        if stored is None:
            return (value,)
        if system is None:
            return stored
        return tuple(f"{value[: len(value) - len(code) - 1]}|{s}" for s in stored)

    def _chained(self, target_type: str, rest: str, raw: str) -> Criterion | None:
        try:
            return self.criterion(target_type, rest, raw)
        except FhirError:
            return None

    def parameter(self, resource_type: str, code: str) -> SearchParameter | None:
        """A parameter this server can apply to the type, or None."""
        parameter = self.registry.get(resource_type, code)
        if parameter is None or parameter.type in {"special"}:
            return None
        if not parameter.stored_as and code not in COLUMN_PARAMETERS:
            return None  # defined, but not indexed (e.g. 3-part composites, _text)
        return parameter

    def _has(self, resource_type: str, name: str, raw: str) -> ReverseChain:
        parts = name.split(":", 3)
        if len(parts) != 4 or parts[1] not in R4_RESOURCE_TYPES:
            raise _bad("_has takes the form _has:Type:reference:parameter=value", name)
        _, source_type, reference_code, rest = parts
        reference = self.registry.get(source_type, reference_code)
        if reference is None or reference.type != "reference":
            raise _bad(f"{source_type} has no reference parameter '{reference_code}'", name)
        if reference.targets and resource_type not in reference.targets:
            raise _bad(f"{source_type}.{reference_code} cannot refer to {resource_type}", name)
        if rest.startswith("_has:"):
            raise _bad("nested _has is not supported", name)
        criterion = self.criterion(source_type, rest, raw)
        if criterion is None:
            raise _bad(f"{source_type} has no search parameter '{rest}'", name)
        return ReverseChain(source_type, reference, criterion)
