"""JSON merge patch (RFC 7396's own examples) and FHIRPath Patch operations."""

from __future__ import annotations

from typing import Any

import pytest

from ehr_service.fhir.errors import FhirError
from ehr_service.fhir.patches import apply_fhirpath_patch, merge_patch

# RFC 7396 Appendix A: original, patch, result.
RFC_7396 = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("original", "patch", "result"), RFC_7396)
def test_merge_patch_rfc_7396_examples(original: Any, patch: Any, result: Any) -> None:
    assert merge_patch(original, patch) == result


def _op(kind: str, path: str, **parts: Any) -> dict[str, Any]:
    out = [{"name": "type", "valueCode": kind}, {"name": "path", "valueString": path}]
    for name, value in parts.items():
        if name == "value_parts":
            out.append({"name": "value", "part": value})
        else:
            out.append({"name": name, **value})
    return {"name": "operation", "part": out}


def _patch(resource: dict[str, Any], *operations: dict[str, Any]) -> dict[str, Any]:
    return apply_fhirpath_patch(
        resource, {"resourceType": "Parameters", "parameter": list(operations)}
    )


PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "id": "p",
    "active": True,
    "identifier": [{"system": "urn:a", "value": "1"}, {"system": "urn:b", "value": "2"}],
    "name": [{"family": "Wang", "given": ["Li", "Na"]}],
}


def test_replace_by_where_and_index() -> None:
    out = _patch(
        PATIENT,
        _op(
            "replace",
            "Patient.identifier.where(system = 'urn:b').value",
            value={"valueString": "9"},
        ),
        _op("replace", "Patient.name[0].given[1]", value={"valueString": "Mei"}),
        _op("replace", "Patient.active", value={"valueBoolean": False}),
    )
    assert out["identifier"][1]["value"] == "9" and out["identifier"][0]["value"] == "1"
    assert out["name"][0]["given"] == ["Li", "Mei"] and out["active"] is False
    assert PATIENT["identifier"][1]["value"] == "2"  # the input is not changed


def test_add_uses_the_definitions_for_repetition() -> None:
    out = _patch(
        PATIENT,
        _op("add", "Patient", name={"valueString": "birthDate"}, value={"valueDate": "1990-03-07"}),
        _op(
            "add",
            "Patient",
            name={"valueString": "telecom"},
            value_parts=[
                {"name": "system", "valueCode": "phone"},
                {"name": "value", "valueString": "123"},
            ],
        ),
        _op("add", "Patient.name[0]", name={"valueString": "given"}, value={"valueString": "X"}),
    )
    assert out["birthDate"] == "1990-03-07"  # 0..1: a value
    assert out["telecom"] == [{"system": "phone", "value": "123"}]  # 0..*: a list
    assert out["name"][0]["given"] == ["Li", "Na", "X"]


def test_insert_move_and_delete() -> None:
    out = _patch(
        PATIENT,
        _op(
            "insert", "Patient.name[0].given", index={"valueInteger": 0}, value={"valueString": "A"}
        ),
        _op(
            "move",
            "Patient.identifier",
            source={"valueInteger": 1},
            destination={"valueInteger": 0},
        ),
        _op("delete", "Patient.name[0].given.last()"),
        _op("delete", "Patient.gender"),  # nothing there: no error
        _op("delete", "Patient.active"),
    )
    assert out["name"][0]["given"] == ["A", "Li"]
    assert [i["system"] for i in out["identifier"]] == ["urn:b", "urn:a"]
    assert "active" not in out and "gender" not in out


def test_deleting_the_last_element_removes_the_list() -> None:
    out = _patch(PATIENT, _op("delete", "Patient.name[0]"))
    assert "name" not in out


NINE, A, TRUE = {"valueInteger": 9}, {"valueString": "A"}, {"valueBoolean": True}


@pytest.mark.parametrize(
    ("operation", "status", "needle"),
    [
        (_op("replace", "Patient.identifier.value", value={"valueString": "x"}), 422, "matches 2"),
        (_op("replace", "Patient.gender", value={"valueString": "x"}), 422, "matches 0"),
        (_op("delete", "Patient.identifier"), 422, "matches 2"),
        (_op("explode", "Patient.active"), 400, "type must be"),
        (_op("replace", "Patient.name.select(family)", value={"valueString": "x"}), 400, "outside"),
        (_op("insert", "Patient.name[0].given", index=NINE, value=A), 422, "beyond"),
        (_op("add", "Patient", name={"valueString": "active"}, value=TRUE), 422, "not repeat"),
        (_op("replace", "Patient.active"), 400, "value"),
        ({"name": "nonsense"}, 400, "operation"),
    ],
)  # fmt: skip
def test_bad_operations_are_refused_with_the_operation_named(
    operation: dict[str, Any], status: int, needle: str
) -> None:
    with pytest.raises(FhirError) as caught:
        _patch(PATIENT, operation)
    assert caught.value.status == status
    assert needle in caught.value.issues[0].diagnostics
    assert caught.value.issues[0].expression == ("Parameters.parameter[0]",)
