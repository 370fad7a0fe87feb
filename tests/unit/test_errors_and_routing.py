from __future__ import annotations

import pytest

from ehr_service.fhir.errors import Category, FhirError, Issue, error_outcome, http_status
from ehr_service.interactions.routing import Interaction, route

BASE = "http://h/fhir"


def test_every_category_maps_to_a_status_and_code() -> None:
    for category in Category:
        status = http_status(category)
        assert 400 <= status < 600
        outcome = error_outcome(FhirError.of(category, "x"))
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"][0]["code"]
    assert http_status(Category.GONE) == 410
    assert http_status(Category.PRECONDITION_FAILED) == 412


def test_outcome_keeps_each_issue_with_its_expression() -> None:
    error = FhirError(
        Category.INCORRECT,
        (Issue("a", "required", expression=("Patient.x",)), Issue("b", None, "warning")),
    )
    issues = error_outcome(error)["issue"]
    assert issues[0] == {
        "severity": "error",
        "code": "required",
        "diagnostics": "a",
        "expression": ["Patient.x"],
    }
    assert issues[1] == {"severity": "warning", "code": "invalid", "diagnostics": "b"}


@pytest.mark.parametrize(
    ("method", "url", "interaction"),
    [
        ("GET", "metadata", Interaction.CAPABILITIES),
        ("GET", "_history", Interaction.HISTORY_SYSTEM),
        ("POST", "Patient", Interaction.CREATE),
        ("GET", "Patient?name=x", Interaction.SEARCH_TYPE),
        ("PUT", "Patient?identifier=a|b", Interaction.CONDITIONAL),
        ("GET", "Patient/_history", Interaction.HISTORY_TYPE),
        ("GET", "Patient/1", Interaction.READ),
        ("PUT", f"{BASE}/Patient/1", Interaction.UPDATE),
        ("PATCH", "Patient/1", Interaction.PATCH),
        ("DELETE", "/Patient/1", Interaction.DELETE),
        ("GET", "Patient/1/_history", Interaction.HISTORY_INSTANCE),
        ("GET", "Patient/1/_history/2", Interaction.VREAD),
    ],
)
def test_route_shapes(method: str, url: str, interaction: Interaction) -> None:
    assert route(method, url, BASE).interaction is interaction


@pytest.mark.parametrize(
    ("method", "url", "status"),
    [
        ("GET", "Unicorn/1", 404),
        ("GET", "http://elsewhere/fhir/Patient/1", 400),
        ("GET", "Patient/bad id", 400),
        ("POST", "Patient/1/_history", 400),
        ("GET", "", 400),
    ],
)
def test_route_rejects(method: str, url: str, status: int) -> None:
    with pytest.raises(FhirError) as caught:
        route(method, url, BASE)
    assert caught.value.status == status
