"""Conformance beyond the model library: required bindings and the service's profiles.

- **Required bindings** (``fhir_profiles/required-bindings.json``, expanded from the
  R4 definitions): the ``code`` elements of every resource whose value set is
  required (``Observation.status``...). The model library takes any string there.
- **Profiles** (StructureDefinitions with a differential, in
  ``fhir_profiles/profiles/``): element cardinality (``min``/``max``, per parent),
  slices told apart by a pattern (``patternIdentifier``, ``patternCodeableConcept``),
  ``fixed[x]``/``pattern[x]`` values, required bindings to the ValueSets beside them
  (enumerated, or by a ``filter`` on a CodeSystem the caller resolves, such as the
  recognition catalogue) and Reference target types.

No I/O but reading the definition files once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ehr_service.fhir import jsonio
from ehr_service.fhir.errors import Issue

# (system, code, filters) -> is the coding in the value set? For value sets over code
# systems this module cannot enumerate (the recognition catalogue).
Resolver = Callable[[str, str, str, tuple[tuple[str, str], ...]], bool]


def _no_resolver(
    _vs_system: str, _system: str, _code: str, _filters: tuple[tuple[str, str], ...]
) -> bool:
    return False


def _walk(node: Any, parts: list[str], where: str) -> Iterator[tuple[Any, str]]:
    """Values at a dotted path below ``node`` (lists flattened), with their location."""
    if not parts:
        yield node, where
        return
    if isinstance(node, list):
        for index, item in enumerate(node):
            yield from _walk(item, parts, f"{where}[{index}]")
        return
    if not isinstance(node, dict):
        return
    head, rest = parts[0], parts[1:]
    if head.endswith("[x]"):
        stem = head[:-3]
        for key, value in node.items():
            if key.startswith(stem) and key[len(stem) : len(stem) + 1].isupper():
                yield from _children(value, rest, f"{where}.{key}")
        return
    if head in node:
        yield from _children(node[head], rest, f"{where}.{head}")


def _children(value: Any, rest: list[str], where: str) -> Iterator[tuple[Any, str]]:
    if isinstance(value, list):
        for index, item in enumerate(value):
            yield from _walk(item, rest, f"{where}[{index}]")
    else:
        yield from _walk(value, rest, where)


def matches_pattern(value: Any, pattern: Any) -> bool:
    """FHIR pattern[x]: every member of the pattern is in the value (lists: each
    pattern item matches some value item)."""
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(
            k in value and matches_pattern(value[k], v) for k, v in pattern.items()
        )
    if isinstance(pattern, list):
        return isinstance(value, list) and all(
            any(matches_pattern(item, p) for item in value) for p in pattern
        )
    return bool(value == pattern)


class RequiredBindings:
    def __init__(self, bindings: dict[str, list[str]]) -> None:
        self._by_type: dict[str, list[tuple[list[str], str, frozenset[str]]]] = {}
        for path, codes in bindings.items():
            resource_type, *parts = path.split(".")
            self._by_type.setdefault(resource_type, []).append((parts, path, frozenset(codes)))

    @classmethod
    def load(cls, profiles_dir: Path) -> RequiredBindings:
        path = profiles_dir / "required-bindings.json"
        return cls(jsonio.loads(path.read_bytes()) if path.exists() else {})

    def issues(self, resource: dict[str, Any]) -> list[Issue]:
        resource_type = str(resource.get("resourceType"))
        found = []
        for parts, path, codes in self._by_type.get(resource_type, ()):
            for value, where in _walk(resource, parts, resource_type):
                if isinstance(value, str) and value not in codes:
                    found.append(
                        Issue(
                            f"{where}: '{value[:64]}' is not a code of the required value set "
                            f"of {path} ({', '.join(sorted(codes)[:12])}"
                            f"{', ...' if len(codes) > 12 else ''})",
                            "code-invalid",
                            expression=(where,),
                        )
                    )
        return found


@dataclass(frozen=True, slots=True)
class ValueSet:
    url: str
    codes: frozenset[tuple[str, str]]  # (system, code) enumerated
    filtered: tuple[tuple[str, tuple[tuple[str, str], ...]], ...]  # (system, filters)

    def contains(self, system: str, code: str, resolver: Resolver) -> bool:
        if (system, code) in self.codes:
            return True
        return any(
            resolver(vs_system, system, code, filters) for vs_system, filters in self.filtered
        )


def _value_set(document: dict[str, Any]) -> ValueSet:
    codes: set[tuple[str, str]] = set()
    filtered = []
    for include in (document.get("compose") or {}).get("include") or ():
        system = str(include.get("system"))
        for concept in include.get("concept") or ():
            codes.add((system, str(concept.get("code"))))
        filters = tuple(
            (str(f.get("property")), str(f.get("value"))) for f in include.get("filter") or ()
        )
        if filters or not include.get("concept"):
            filtered.append((system, filters))
    return ValueSet(str(document["url"]), frozenset(codes), tuple(filtered))


@dataclass(frozen=True, slots=True)
class Rule:
    path: list[str]  # below the resource type
    label: str  # element id, e.g. Patient.identifier:idNumber
    slice_pattern: Any  # items counted for this slice must match it
    min: int
    max: int | None
    fixed: Any
    pattern: Any
    value_set: str | None  # required binding
    targets: tuple[str, ...]  # Reference target types


def _typed(element: dict[str, Any], prefix: str) -> Any:
    return next((v for k, v in element.items() if k.startswith(prefix)), None)


@dataclass(frozen=True, slots=True)
class Profile:
    url: str
    name: str
    resource_type: str
    rules: tuple[Rule, ...]

    @classmethod
    def of(cls, structure: dict[str, Any]) -> Profile:
        resource_type = str(structure["type"])
        rules = []
        for element in (structure.get("differential") or {}).get("element") or ():
            path = str(element["path"]).split(".")[1:]
            if not path:
                continue
            max_value = element.get("max")
            binding = element.get("binding") or {}
            targets = tuple(
                profile.rsplit("/", 1)[-1]
                for kind in element.get("type") or ()
                for profile in kind.get("targetProfile") or ()
            )
            slice_pattern = _typed(element, "pattern") if element.get("sliceName") else None
            rules.append(
                Rule(
                    path,
                    str(element.get("id") or element["path"]),
                    slice_pattern,
                    int(element.get("min", 0)),
                    None if max_value in (None, "*") else int(max_value),
                    _typed(element, "fixed"),
                    None if element.get("sliceName") else _typed(element, "pattern"),
                    binding.get("valueSet") if binding.get("strength") == "required" else None,
                    targets,
                )
            )
        return cls(str(structure["url"]), str(structure.get("name")), resource_type, tuple(rules))

    def issues(
        self, resource: dict[str, Any], value_sets: dict[str, ValueSet], resolver: Resolver
    ) -> list[Issue]:
        found: list[Issue] = []
        if resource.get("resourceType") != self.resource_type:
            return [Issue(f"{self.name} profiles {self.resource_type} resources", "invalid")]
        for rule in self.rules:
            parents = list(_walk(resource, rule.path[:-1], self.resource_type))
            for parent, where in parents:
                values = list(_walk(parent, rule.path[-1:], where))
                if rule.slice_pattern is not None:
                    values = [(v, w) for v, w in values if matches_pattern(v, rule.slice_pattern)]
                found += self._cardinality(rule, values, where)
                for value, at in values:
                    found += self._value(rule, value, at, value_sets, resolver)
        return found

    def _cardinality(self, rule: Rule, values: list[Any], where: str) -> list[Issue]:
        count = len(values)
        expression = f"{where}.{rule.path[-1]}"
        if count < rule.min:
            return [
                Issue(
                    f"{self.name}: {rule.label} needs at least {rule.min} (found {count})",
                    "required",
                    expression=(expression,),
                )
            ]
        if rule.max is not None and count > rule.max:
            return [
                Issue(
                    f"{self.name}: {rule.label} allows at most {rule.max} (found {count})",
                    "structure",
                    expression=(expression,),
                )
            ]
        return []

    def _value(
        self, rule: Rule, value: Any, at: str, value_sets: dict[str, ValueSet], resolver: Resolver
    ) -> list[Issue]:
        out = []
        if rule.fixed is not None and value != rule.fixed:
            out.append(
                Issue(
                    f"{self.name}: {at} must be {jsonio.dumps(rule.fixed).decode()}",
                    "value",
                    expression=(at,),
                )
            )
        if rule.pattern is not None and not matches_pattern(value, rule.pattern):
            out.append(
                Issue(
                    f"{self.name}: {at} must match {jsonio.dumps(rule.pattern).decode()}",
                    "value",
                    expression=(at,),
                )
            )
        if rule.value_set is not None:
            value_set = value_sets.get(rule.value_set)
            if value_set is not None and not _in_value_set(value, value_set, resolver):
                out.append(
                    Issue(
                        f"{self.name}: {at} is not in the required value set {rule.value_set}",
                        "code-invalid",
                        expression=(at,),
                    )
                )
        if rule.targets and isinstance(value, dict) and isinstance(value.get("reference"), str):
            target = value["reference"].split("?")[0].split("/")
            kind = target[-2] if len(target) >= 2 else ""
            if kind not in rule.targets:
                out.append(
                    Issue(
                        f"{self.name}: {at} must refer to {' or '.join(rule.targets)}",
                        "value",
                        expression=(at,),
                    )
                )
        return out


def _in_value_set(value: Any, value_set: ValueSet, resolver: Resolver) -> bool:
    if isinstance(value, str):  # a code: any system of the value set
        return any(code == value for _, code in value_set.codes) or any(
            resolver(system, system, value, filters) for system, filters in value_set.filtered
        )
    codings = value.get("coding") if isinstance(value, dict) else None
    if isinstance(value, dict) and "code" in value and codings is None:
        codings = [value]  # a Coding
    if not isinstance(codings, list):
        return False
    return any(
        isinstance(c, dict)
        and value_set.contains(str(c.get("system")), str(c.get("code")), resolver)
        for c in codings or ()
    )


class Profiles:
    """The service's StructureDefinitions and the ValueSets they bind to."""

    def __init__(self, profiles: list[Profile], value_sets: list[ValueSet]) -> None:
        self.by_url = {p.url: p for p in profiles}
        self.value_sets = {v.url: v for v in value_sets}

    @classmethod
    def load(cls, directory: Path) -> Profiles:
        profiles, value_sets = [], []
        for path in sorted(directory.glob("*.json")) if directory.is_dir() else ():
            document = jsonio.loads(path.read_bytes())
            if document.get("resourceType") == "StructureDefinition":
                profiles.append(Profile.of(document))
            elif document.get("resourceType") == "ValueSet":
                value_sets.append(_value_set(document))
        return cls(profiles, value_sets)

    def issues(self, url: str, resource: dict[str, Any], resolver: Resolver) -> list[Issue]:
        profile = self.by_url.get(url.split("|")[0])
        if profile is None:
            return []
        return profile.issues(resource, self.value_sets, resolver)

    def claimed(self, resource: dict[str, Any]) -> list[str]:
        """The known profiles a resource claims in meta.profile."""
        meta = resource.get("meta")
        claims = meta.get("profile") if isinstance(meta, dict) else None
        return [
            c.split("|")[0]
            for c in claims or ()
            if isinstance(c, str) and c.split("|")[0] in self.by_url
        ]


class Conformance:
    """Required bindings of every resource, and the service's profiles."""

    def __init__(self, bindings: RequiredBindings, profiles: Profiles) -> None:
        self.bindings = bindings
        self.profiles = profiles

    @classmethod
    def load(cls, profiles_dir: Path) -> Conformance:
        return cls(RequiredBindings.load(profiles_dir), Profiles.load(profiles_dir / "profiles"))

    def profile_issues(
        self, resource: dict[str, Any], urls: list[str], resolver: Resolver = _no_resolver
    ) -> list[Issue]:
        return [issue for url in urls for issue in self.profiles.issues(url, resource, resolver)]
