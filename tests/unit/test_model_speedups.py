"""The start-up patch of fhir_core's null check: installed, and validation says
exactly what it says without it (valid resources, nulls in complex lists at any
depth, nulls where they are allowed)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fhir_core import fhirabstractmodel

from ehr_service.fhir import model_speedups
from ehr_service.fhir.validation import resource_issues
from tests.helpers import observation, patient

CASES: list[dict[str, Any]] = [
    patient(),
    patient(name=[None]),
    patient(name=[{"family": "Li", "given": ["Wei", None]}]),  # null in a primitive list
    patient(name=[{"family": "Li"}], telecom=[{"system": "phone", "value": "1"}, None]),
    {**observation("Patient/p"), "component": [{"code": {"coding": [None]}}]},
    {**observation("Patient/p"), "note": [None, {"text": "x"}]},
    {**observation("Patient/p"), "category": [{"coding": [{"code": "lab"}]}]},
]


@pytest.fixture
def original() -> Iterator[Any]:
    function = fhirabstractmodel.FHIRAbstractModel.reject_null_complex_elements.__func__
    fast = function.__code__
    replaced = vars(fhirabstractmodel)["_ehr_service_original_reject_null"].__code__

    def use(patched: bool) -> None:
        function.__code__ = fast if patched else replaced

    yield use
    function.__code__ = fast


def test_the_patch_is_installed_once() -> None:
    assert model_speedups.installed()
    assert model_speedups.install()  # again: a no-op


@pytest.mark.parametrize("resource", CASES)
def test_validation_is_the_same_with_and_without_the_patch(
    original: Any, resource: dict[str, Any]
) -> None:
    kind = resource["resourceType"]
    original(False)
    without = [(i.code, i.diagnostics, i.expression) for i in resource_issues(resource, kind)]
    original(True)
    with_patch = [(i.code, i.diagnostics, i.expression) for i in resource_issues(resource, kind)]
    assert with_patch == without


def test_a_null_in_a_complex_list_is_still_refused() -> None:
    issues = resource_issues(patient(name=[None]), "Patient")
    assert issues and any("name" in e for i in issues for e in i.expression)


def test_the_cases_include_refusals() -> None:
    refused = [c for c in CASES if resource_issues(c, c["resourceType"])]
    assert len(refused) >= 3  # the comparison above covers errors, not only passes
