"""The Patient compartment (FHIR R4 CompartmentDefinition ``patient``).

Every patient-owned row carries the id of the patient whose compartment it
belongs to (docs/architecture.md §4, §10): for a Patient its own id, otherwise the first
``Patient/`` reference found through the compartment's search parameters, in
the order the definition lists them (``subject`` before ``performer``).
The parameters' FHIRPath expressions for the Patient compartment are all plain
paths, optionally filtered by ``.where(resolve() is Patient)``; they are compiled
once into key paths.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from ehr_service.fhir import jsonio
from ehr_service.fhir.references import parse_reference

_WHERE_PATIENT = re.compile(r"\.where\(resolve\(\) is Patient\)$")
_PLAIN_PATH = re.compile(r"[A-Za-z]+(?:\.[A-Za-z]+)*")


@dataclass(frozen=True, slots=True)
class Visibility:
    """What a caller may see: everything (``patient`` None), or one patient's
    compartment plus the resource types that belong to no patient compartment."""

    patient: str | None
    member_types: frozenset[str] = frozenset()
    # Consent: records whose resident refused any of these actors are not shown.
    refused_actors: tuple[str, ...] = ()
    # EHR_SHARING_POLICY=consent-required: nor those whose resident has no active
    # permit naming one of these (``permit:region:<code>``); empty, no permit needed.
    permit_actors: tuple[str, ...] = ()

    @property
    def restricts(self) -> bool:
        return self.patient is not None or bool(self.refused_actors) or bool(self.permit_actors)

    def can_see(self, resource_type: str, owner: str | None) -> bool:
        """The compartment part of visibility (consent needs the database)."""
        if self.patient is None:
            return True
        if owner is None:
            return resource_type not in self.member_types
        return owner == self.patient


EVERYTHING = Visibility(None)


class PatientCompartment:
    """Compiled membership paths of the Patient compartment, per resource type."""

    def __init__(
        self,
        paths: dict[str, tuple[tuple[str, ...], ...]],
        singular: frozenset[tuple[str, str]] = frozenset(),
    ) -> None:
        self._paths = paths
        self._members = frozenset(paths) | {"Patient"}
        self._singular = singular  # (type, element) that holds one value, not a list

    @classmethod
    def load(cls, profiles_dir: Path) -> PatientCompartment:
        definition = jsonio.loads(
            (profiles_dir / "compartmentdefinition-patient.json").read_bytes()
        )
        bundle = jsonio.loads((profiles_dir / "search-parameters.json").read_bytes())
        expressions: dict[tuple[str, str], str] = {}
        for entry in bundle["entry"]:
            parameter = entry["resource"]
            for base in parameter.get("base", []):
                expressions[(base, parameter["code"])] = parameter.get("expression", "")
        paths: dict[str, tuple[tuple[str, ...], ...]] = {}
        for member in definition["resource"]:
            resource_type = member["code"]
            compiled: list[tuple[str, ...]] = []
            for code in member.get("param", []):
                if code == "{def}":
                    continue
                for part in expressions.get((resource_type, code), "").split("|"):
                    path = _WHERE_PATIENT.sub("", part.strip())
                    if path.startswith(resource_type + ".") and _PLAIN_PATH.fullmatch(path):
                        keys = tuple(path.split(".")[1:])
                        if keys not in compiled:
                            compiled.append(keys)
            if compiled:
                paths[resource_type] = tuple(compiled)
        types = jsonio.loads((profiles_dir / "r4-xml.json").read_bytes())["types"]
        singular = frozenset(
            (resource_type, name)
            for resource_type in paths
            for name, is_list, *_ in types.get(resource_type, {}).get("", [])
            if not is_list
        )
        return cls(paths, singular)

    def pins_owner(self, resource_type: str, expression: str) -> bool:
        """Whether a resource whose reference search parameter of this expression
        points to Patient/X is owned by X: the expression is the type's first
        compartment path, and a single element (the owner is the first Patient
        reference found on those paths, in order)."""
        first = self._paths.get(resource_type, ((),))[0]
        # a parameter shared by many types (``patient``) is a union: this type's part
        branches = [
            b.strip() for b in expression.split("|") if b.strip().startswith(f"{resource_type}.")
        ]
        if len(branches) != 1:
            return False
        path = _WHERE_PATIENT.sub("", branches[0])
        return (
            len(first) == 1
            and path == f"{resource_type}.{first[0]}"
            and (resource_type, first[0]) in self._singular
        )

    def member_types(self) -> frozenset[str]:
        return self._members

    def patient_ids(self, resource: dict[str, Any], base_url: str | None = None) -> Iterator[str]:
        """Ids of the patients whose compartment holds this resource, in order
        (references by this server's own absolute URL count as local ones)."""
        resource_type = resource.get("resourceType")
        if resource_type == "Patient":
            if isinstance(resource.get("id"), str):
                yield resource["id"]
            return
        for keys in self._paths.get(str(resource_type), ()):
            for value in _follow(resource, keys):
                if isinstance(value, dict) and isinstance(value.get("reference"), str):
                    ref = parse_reference(value["reference"])
                    if (
                        ref is not None
                        and ref.resource_type == "Patient"
                        and (ref.base is None or ref.base == base_url)
                    ):
                        yield ref.resource_id

    def owner(self, resource: dict[str, Any], base_url: str | None = None) -> str | None:
        """The compartment patient id stored with the resource, or None."""
        return next(self.patient_ids(resource, base_url), None)


def _follow(node: Any, keys: tuple[str, ...]) -> Iterator[Any]:
    if isinstance(node, list):
        for item in node:
            yield from _follow(item, keys)
        return
    if not keys:
        yield node
        return
    if isinstance(node, dict) and keys[0] in node:
        yield from _follow(node[keys[0]], keys[1:])


@cache
def load_compartment(profiles_dir: Path) -> PatientCompartment:
    return PatientCompartment.load(profiles_dir)
