"""Reading the ``Parameters`` resource that operations take (R4 §2.42)."""

from __future__ import annotations

from typing import Any

from ehr_service.fhir.errors import Category, FhirError


def _bad(message: str, expression: str = "Parameters") -> FhirError:
    return FhirError.of(Category.INCORRECT, message, code="invalid", expression=[expression])


class OperationInput:
    """The named parts of a Parameters body (validated shallowly; values by type)."""

    def __init__(self, body: Any, operation: str) -> None:
        if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
            raise _bad(f"{operation} takes a Parameters resource")
        parts = body.get("parameter", [])
        if not isinstance(parts, list) or not all(
            isinstance(p, dict) and isinstance(p.get("name"), str) for p in parts
        ):
            raise _bad("Parameters.parameter must be a list of named parts")
        self.operation = operation
        self.parts = parts

    def all(self, name: str) -> list[dict[str, Any]]:
        return [p for p in self.parts if p["name"] == name]

    def one(self, name: str) -> dict[str, Any] | None:
        found = self.all(name)
        if len(found) > 1:
            raise _bad(f"{self.operation}: '{name}' may be given once", name)
        return found[0] if found else None

    def value(self, name: str, kind: str) -> Any:
        """``value[kind]`` of the part ``name`` (e.g. kind ``Boolean``), or None."""
        part = self.one(name)
        if part is None:
            return None
        key = f"value{kind}"
        if key not in part:
            raise _bad(f"{self.operation}: '{name}' must be a value{kind}", name)
        return part[key]

    def boolean(self, name: str, default: bool) -> bool:
        value = self.value(name, "Boolean")
        if value is None:
            return default
        if not isinstance(value, bool):
            raise _bad(f"{self.operation}: '{name}' must be true or false", name)
        return value

    def as_query(self) -> dict[str, list[str]]:
        """The parts as a GET's URL would carry them (R4 §3.1.0.4: an operation with
        primitive parameters only may be invoked either way): one primitive
        ``value[x]`` each, booleans as ``true`` and ``false``."""
        query: dict[str, list[str]] = {}
        for index, part in enumerate(self.parts):
            values = [v for k, v in part.items() if k.startswith("value")]
            if len(values) != 1 or isinstance(values[0], dict | list):
                raise _bad(
                    f"{self.operation}: each parameter needs one primitive value[x]",
                    f"Parameters.parameter[{index}]",
                )
            value = values[0]
            text = str(value).lower() if isinstance(value, bool) else str(value)
            query.setdefault(part["name"], []).append(text)
        return query

    def resource(self, name: str, resource_type: str) -> dict[str, Any] | None:
        part = self.one(name)
        if part is None:
            return None
        resource = part.get("resource")
        if not isinstance(resource, dict) or resource.get("resourceType") != resource_type:
            raise _bad(f"{self.operation}: '{name}' must be a {resource_type} resource", name)
        return resource
