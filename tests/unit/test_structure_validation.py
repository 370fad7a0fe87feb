"""R4 types without an R4B model are validated against their StructureDefinitions."""

from __future__ import annotations

from ehr_service.fhir.resource_types import R4_TYPES_WITHOUT_R4B_MODEL
from ehr_service.fhir.structure_validation import structure_only_types, validate_structure


def _problems(resource: dict) -> set[tuple[str, str]]:
    return {(i.code or "", i.expression[0]) for i in validate_structure(resource)}


def test_the_shipped_definitions_cover_every_type_r4b_dropped() -> None:
    assert structure_only_types() == R4_TYPES_WITHOUT_R4B_MODEL


def test_valid_resources_pass() -> None:
    product = {
        "resourceType": "MedicinalProduct",
        "id": "aspirin",
        "meta": {"versionId": "1", "lastUpdated": "2026-01-01T00:00:00Z"},
        "identifier": [{"system": "urn:x", "value": "1"}],
        "name": [
            {
                "productName": "Aspirin 100 mg",
                "namePart": [{"part": "Aspirin", "type": {"code": "INV"}}],
                "countryLanguage": [{"country": {"text": "CN"}, "language": {"text": "zh"}}],
            }
        ],
        "_domain": {"extension": [{"url": "urn:e", "valueString": "x"}]},
        "extension": [{"url": "urn:e", "valueBoolean": True}],
    }
    assert validate_structure(product) == []
    protein = {
        "resourceType": "SubstanceProtein",
        "numberOfSubunits": 2,
        "disulfideLinkage": ["A1-B2"],
        "subunit": [
            {
                "subunit": 1,
                "sequence": "MKT",
                "length": 3,
                "sequenceAttachment": {"contentType": "text/plain"},
            }
        ],
    }
    assert validate_structure(protein) == []


def test_every_kind_of_problem_is_reported_with_its_location() -> None:
    problems = _problems(
        {
            "resourceType": "MedicinalProduct",
            "bogus": 1,  # unknown element
            "name": {"productName": "x"},  # must be an array
            "combinedPharmaceuticalDoseForm": [{"text": "x"}],  # must not be an array
            "specialMeasures": [5],  # wrong JSON type
            "id": "not valid!",  # fails the id regex
            "contained": [{"no": "type"}],
            "extension": [{"valueString": "no url"}],  # url is required
        }
    )
    assert ("structure", "MedicinalProduct.bogus") in problems
    assert ("structure", "MedicinalProduct.name") in problems
    assert ("structure", "MedicinalProduct.combinedPharmaceuticalDoseForm") in problems
    assert ("value", "MedicinalProduct.specialMeasures[0]") in problems
    assert ("value", "MedicinalProduct.id") in problems
    assert ("structure", "MedicinalProduct.contained[0]") in problems
    assert ("required", "MedicinalProduct.extension[0].url") in problems


def test_nested_required_and_choice_types() -> None:
    problems = _problems(
        {
            "resourceType": "MedicinalProduct",
            "name": [{"namePart": [{"type": {"code": "INV"}}]}],
            "extension": [
                {"url": "urn:a", "valueString": "x", "valueBoolean": True},
                {"url": "urn:b", "valueUnicorn": 1},
            ],
        }
    )
    assert ("required", "MedicinalProduct.name[0].productName") in problems
    assert ("required", "MedicinalProduct.name[0].namePart[0].part") in problems
    assert ("structure", "MedicinalProduct.extension[0].valueBoolean") in problems
    assert ("structure", "MedicinalProduct.extension[1].valueUnicorn") in problems
