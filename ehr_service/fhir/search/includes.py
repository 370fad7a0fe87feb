"""``_include`` and ``_revinclude`` (R4 §3.1.1.5.4-5), parsed and checked before any
SQL runs: a malformed or unknown value is a 400 whether or not anything matches."""

from __future__ import annotations

from dataclasses import dataclass

from ehr_service.fhir.errors import Category, FhirError
from ehr_service.fhir.resource_types import R4_RESOURCE_TYPES
from ehr_service.fhir.search.registry import SearchParameterRegistry

INCLUDE_PARAMETERS = ("_include", "_include:iterate", "_revinclude", "_revinclude:iterate")


@dataclass(frozen=True, slots=True)
class Include:
    name: str  # _include, _include:iterate, _revinclude, _revinclude:iterate
    source_type: str
    code: str  # a reference search parameter of source_type, or "*"
    target: str | None

    @property
    def forward(self) -> bool:
        return self.name.startswith("_include")

    @property
    def iterate(self) -> bool:
        return self.name.endswith(":iterate")


def _bad(name: str, message: str) -> FhirError:
    return FhirError.of(Category.INCORRECT, f"{name}: {message}", code="value", expression=[name])


def parse_includes(
    result: dict[str, list[str]], registry: SearchParameterRegistry
) -> list[Include]:
    out = []
    for name in INCLUDE_PARAMETERS:
        for value in result.get(name, []):
            parts = value.split(":")
            if len(parts) not in {2, 3}:
                raise _bad(name, f"'{value[:80]}': use Type:param[:Target]")
            source_type, code = parts[0], parts[1]
            target = parts[2] if len(parts) == 3 else None
            if source_type not in R4_RESOURCE_TYPES:
                raise _bad(name, f"'{source_type[:64]}' is not a FHIR R4 resource type")
            if target is not None and target not in R4_RESOURCE_TYPES:
                raise _bad(name, f"'{target[:64]}' is not a FHIR R4 resource type")
            if code == "*":
                if name.startswith("_revinclude"):
                    raise _bad(name, "the wildcard is for _include only")
            else:
                reference = registry.get(source_type, code)
                if reference is None or reference.type != "reference":
                    raise _bad(name, f"{source_type} has no reference parameter '{code[:64]}'")
                if target is not None and reference.targets and target not in reference.targets:
                    raise _bad(name, f"{source_type}:{code} does not refer to {target}")
            out.append(Include(name, source_type, code, target))
    return out
