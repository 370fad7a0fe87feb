"""Resource validation: FHIR R4 JSON rules plus the ``fhir.resources.R4B`` models.

FHIR R4 §2.6.2 (JSON representation) forbids empty objects, empty arrays, empty
strings and ``null`` outside arrays of primitives; the R4B models accept all of
these, so :func:`json_shape_issues` checks them first. Structure, cardinality
and datatypes are then checked by the R4B model of the type, or, for the R4
types that R4B dropped, by :mod:`ehr_service.fhir.structure_validation`.
Every problem is reported with its location (``OperationOutcome.issue.expression``).
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from ehr_service.fhir import jsonio, model_speedups
from ehr_service.fhir.errors import Category, FhirError, Issue
from ehr_service.fhir.json_types import json_type_issues
from ehr_service.fhir.resource_types import R4_RESOURCE_TYPES, R4_TYPES_WITHOUT_R4B_MODEL

MAX_REPORTED_ISSUES = 100
model_speedups.install()


def parse_json(raw: bytes) -> Any:
    """Parse a request body; malformed JSON is a 400 with the parser's position."""
    if not raw.strip():
        raise FhirError.of(Category.INCORRECT, "The request body is empty", code="structure")
    try:
        return jsonio.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise FhirError.of(
            Category.INCORRECT, f"The request body is not valid JSON: {exc}", code="structure"
        ) from None


@cache
def _model_class(resource_type: str) -> type[BaseModel]:
    from fhir.resources.R4B import get_fhir_model_class

    cls: type[BaseModel] = get_fhir_model_class(resource_type)
    return cls


def _expression(resource_type: str, loc: tuple[int | str, ...]) -> str:
    out = resource_type
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}"
    return out


def _issue_code(error_type: str) -> str:
    if error_type.startswith("missing") or error_type.endswith(".missing"):
        return "required"
    if error_type in {"extra_forbidden", "model_type", "list_type", "dict_type"}:
        return "structure"
    return "value"


def _unreported_required(
    model: type[BaseModel], resource: dict[str, Any], resource_type: str, errors: list[Any]
) -> list[Issue]:
    """Required primitive elements the model leaves unreported.

    fhir.resources checks required primitives in a model validator that only
    runs when every field validated, so a resource with other errors would hide
    them; checked here at the top level to report every problem at once.
    """
    reported = {tuple(error["loc"])[:1] for error in errors}
    issues = []
    for name, info in model.model_fields.items():
        extra = info.json_schema_extra
        if not isinstance(extra, dict) or not extra.get("element_required"):
            continue
        alias = info.alias or name
        if alias in resource or f"_{alias}" in resource or (alias,) in reported:
            continue
        issues.append(
            Issue(
                f"Element '{alias}' is required",
                "required",
                expression=(f"{resource_type}.{alias}",),
            )
        )
    return issues


def json_shape_issues(value: Any, path: str) -> list[Issue]:
    """Empty or null values that FHIR JSON does not allow (R4 §2.6.2)."""
    issues: list[Issue] = []
    _shape(value, [path], False, issues)
    return issues[:MAX_REPORTED_ISSUES]


def _located(where: list[Any]) -> tuple[str]:
    """The FHIRPath-like location of a stack of keys and indexes."""
    parts = [str(where[0])]
    parts.extend(f"[{p}]" if type(p) is int else f".{p}" for p in where[1:])
    return ("".join(parts),)


def _shape(node: Any, where: list[Any], in_array: bool, issues: list[Issue]) -> None:
    # Runs on every stored resource: plain recursion; ``where`` is a stack of keys
    # and indexes, formatted only when there is a problem to report.
    kind = type(node)
    if kind is dict:
        if not node:
            issues.append(
                Issue("Empty objects are not allowed in FHIR JSON", "structure",
                      expression=_located(where))
            )  # fmt: skip
        for key, child in node.items():
            if child is None or type(child) in _CHECKED:
                where.append(key)
                _shape(child, where, False, issues)
                where.pop()
    elif kind is list:
        if not node:
            issues.append(
                Issue("Empty arrays are not allowed in FHIR JSON", "structure",
                      expression=_located(where))
            )  # fmt: skip
        for index, child in enumerate(node):
            if type(child) in _CHECKED:
                where.append(index)
                _shape(child, where, True, issues)
                where.pop()
    elif kind is str:
        if not node or node.isspace():
            issues.append(
                Issue("Empty or blank strings are not allowed in FHIR JSON", "value",
                      expression=_located(where))
            )  # fmt: skip
        elif CONTROL_CHARACTERS.search(node):
            issues.append(
                Issue("Strings may not contain control characters other than tab, CR and LF",
                      "value", expression=_located(where))
            )  # fmt: skip
    elif node is None and not in_array:
        # null is only meaningful inside arrays of primitives with `_x` siblings.
        issues.append(
            Issue("null is not allowed here in FHIR JSON", "structure", expression=_located(where))
        )


_CHECKED = {dict, list, str}
# FHIR R4 §2.24.0.1: no characters below U+0020 except tab, CR and LF (and never NUL).
CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def check_resource_type(resource: Any, expression: str = "") -> str:
    """The resource's type, if it is a JSON object naming an R4 resource type."""
    where = expression or "resourceType"
    if not isinstance(resource, dict):
        raise FhirError.of(
            Category.INCORRECT,
            "A resource must be a JSON object",
            code="structure",
            expression=[expression or "$this"],
        )
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str):
        raise FhirError.of(
            Category.INCORRECT,
            "The resource has no resourceType",
            code="required",
            expression=[where],
        )
    if resource_type not in R4_RESOURCE_TYPES:
        raise FhirError.of(
            Category.INCORRECT,
            f"'{resource_type[:64]}' is not a FHIR R4 resource type",
            code="not-supported",
            expression=[where],
        )
    return resource_type


def resource_issues(resource: dict[str, Any], resource_type: str) -> list[Issue]:
    """Every structural problem of a resource whose type is known to be R4."""
    try:
        return _resource_issues(resource, resource_type)
    except RecursionError:  # nesting deeper than any real resource
        return [
            Issue("The resource is nested too deeply", "structure", expression=(resource_type,))
        ]


def _resource_issues(resource: dict[str, Any], resource_type: str) -> list[Issue]:
    if resource_type in R4_TYPES_WITHOUT_R4B_MODEL:
        from ehr_service.fhir.structure_validation import validate_structure

        return validate_structure(resource)  # checks the JSON shape rules itself
    issues = json_shape_issues(resource, resource_type)
    typed = json_type_issues(resource, resource_type)  # before the model coerces
    issues.extend(typed)
    reported = {e for issue in typed for e in issue.expression}
    model = _model_class(resource_type)
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)[:MAX_REPORTED_ISSUES]
        issues.extend(_unreported_required(model, resource, resource_type, errors))
        for error in errors:
            where = _expression(resource_type, tuple(error["loc"]))
            if where in reported:
                continue
            # Messages never echo the input: it may hold personal data.
            issues.append(
                Issue(
                    error["msg"],
                    _issue_code(str(error["type"])),
                    expression=(where,),
                )
            )
    except (ValueError, TypeError, AttributeError) as exc:  # defensive: a model raising
        issues.append(Issue(f"Invalid resource: {exc}", "structure", expression=(resource_type,)))
    return issues


def validate_resource(resource: Any, expected_type: str | None = None) -> dict[str, Any]:
    """Validate a parsed resource; raise a 400 listing every problem.

    Returns the same dict (never a model dump: stored JSON is what was sent).
    """
    resource_type = check_resource_type(resource)
    if expected_type is not None and resource_type != expected_type:
        raise FhirError.of(
            Category.INCORRECT,
            f"resourceType '{resource_type}' does not match the URL's type '{expected_type}'",
            code="invalid",
            expression=["resourceType"],
        )
    issues = resource_issues(resource, resource_type)
    if issues:
        raise FhirError(Category.INCORRECT, tuple(issues))
    return resource  # type: ignore[no-any-return]
