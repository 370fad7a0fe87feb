"""The OperationDefinitions of the operations this server routes.

Data files in ``fhir_profiles/operations/`` (one ``OperationDefinition-<id>.json``
each): the official R4 definitions as the specification publishes them
(``fhir_profiles/_build_operations.py``), Bulk Data v2, R5 ``$merge`` and IHE
PIXm written after their specifications under their official canonical URLs, and
the service's own (``urn:ehr-service:OperationDefinition/<id>``). They are checked
once, at load: each must be a valid R4 OperationDefinition (its required bindings
too) whose id is its file's
and whose url no other has, and keep the rules R4 states for parameters (opd-1..3);
a broken file stops the service from starting. They are served as stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from ehr_service.fhir import jsonio
from ehr_service.fhir.profiles import RequiredBindings
from ehr_service.fhir.resource_types import R4_RESOURCE_TYPES
from ehr_service.fhir.validation import validate_resource

DIRECTORY = "operations"
PREFIX = "OperationDefinition-"
OWN_CANONICAL = "urn:ehr-service:OperationDefinition/"


class DefinitionError(ValueError):
    """A shipped OperationDefinition that breaks a rule (the file is named)."""


@dataclass(frozen=True, slots=True)
class OperationDefinition:
    id: str
    url: str
    name: str
    code: str
    resources: tuple[str, ...]  # resource types, or ("Resource",) for every type
    system: bool
    type: bool
    instance: bool
    content: bytes  # the file's bytes, served as stored
    resource: dict[str, Any]

    def applies_to(self, resource_type: str) -> bool:
        return resource_type in self.resources or "Resource" in self.resources

    def levels(self) -> tuple[str, ...]:
        """Where it is invoked: ``system``, ``type`` and/or ``instance``."""
        flags = (("system", self.system), ("type", self.type), ("instance", self.instance))
        return tuple(level for level, on in flags if on)


def _check_parameters(parameters: list[dict[str, Any]], where: str) -> None:
    for parameter in parameters:
        name = f"{where}.{parameter.get('name')}"
        has_type, parts = "type" in parameter, parameter.get("part") or []
        if not has_type and not parts:  # opd-1
            raise DefinitionError(f"{name}: a parameter needs a type or parts")
        if "searchType" in parameter and parameter.get("type") != "string":  # opd-2
            raise DefinitionError(f"{name}: searchType is for string parameters only")
        if parameter.get("targetProfile") and parameter.get("type") not in {
            "Reference",
            "canonical",
        }:  # opd-3
            raise DefinitionError(f"{name}: targetProfile is for Reference and canonical only")
        _check_parameters(parts, name)


def parse(path: Path, bindings: RequiredBindings) -> OperationDefinition:
    """One definition file, checked (:class:`DefinitionError` names what is wrong)."""
    content = path.read_bytes()
    try:
        resource = validate_resource(jsonio.loads(content), expected_type="OperationDefinition")
    except Exception as exc:  # FhirError, or JSON that does not parse
        raise DefinitionError(f"{path.name}: not a valid R4 OperationDefinition: {exc}") from exc
    wrong_codes = bindings.issues(resource)
    if wrong_codes:
        raise DefinitionError(
            f"{path.name}: not a valid R4 OperationDefinition: {wrong_codes[0].diagnostics}"
        )
    definition_id = resource.get("id")
    if not isinstance(definition_id, str) or path.name != f"{PREFIX}{definition_id}.json":
        raise DefinitionError(f"{path.name}: its id is {definition_id!r}")
    for field in ("url", "name", "code"):
        if not isinstance(resource.get(field), str):
            raise DefinitionError(f"{path.name}: {field} is required here")
    resources = tuple(resource.get("resource") or ())
    unknown = [t for t in resources if t not in R4_RESOURCE_TYPES and t != "Resource"]
    if unknown:
        raise DefinitionError(f"{path.name}: {unknown} are not R4 resource types")
    if (resource["type"] or resource["instance"]) and not resources:
        raise DefinitionError(f"{path.name}: a type or instance operation names its types")
    if not (resource["system"] or resource["type"] or resource["instance"]):
        raise DefinitionError(f"{path.name}: invoked at no level")
    _check_parameters(resource.get("parameter") or [], path.name)
    return OperationDefinition(
        id=definition_id,
        url=resource["url"],
        name=resource["name"],
        code=resource["code"],
        resources=resources,
        system=resource["system"],
        type=resource["type"],
        instance=resource["instance"],
        content=content,
        resource=resource,
    )


class OperationDefinitions:
    """The shipped definitions, by id and by canonical url."""

    def __init__(self, definitions: list[OperationDefinition]) -> None:
        self.all = tuple(sorted(definitions, key=lambda d: d.id))
        self.by_id = {d.id: d for d in self.all}
        self.by_url: dict[str, OperationDefinition] = {}
        for definition in self.all:
            if definition.url in self.by_url:
                raise DefinitionError(
                    f"{PREFIX}{definition.id}.json: url {definition.url} is "
                    f"{PREFIX}{self.by_url[definition.url].id}.json's too"
                )
            self.by_url[definition.url] = definition

    def find(self, url: str) -> OperationDefinition | None:
        """By canonical url, with or without ``|version``."""
        return self.by_url.get(url.split("|", 1)[0])

    @classmethod
    def load(cls, profiles_dir: Path) -> OperationDefinitions:
        paths = sorted((profiles_dir / DIRECTORY).glob(f"{PREFIX}*.json"))
        bindings = RequiredBindings.load(profiles_dir)
        return cls([parse(path, bindings) for path in paths])


@cache
def load_operation_definitions(profiles_dir: Path) -> OperationDefinitions:
    return OperationDefinitions.load(profiles_dir)
