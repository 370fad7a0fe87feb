from __future__ import annotations

from pathlib import Path

from ehr_service.config import PROJECT_ROOT
from ehr_service.fhir.compartment import PatientCompartment
from ehr_service.fhir.references import parse_reference, rewrite_references


def test_parse_reference_shapes() -> None:
    ref = parse_reference("Patient/123")
    assert ref is not None and (ref.resource_type, ref.resource_id) == ("Patient", "123")
    versioned = parse_reference("http://example.org/fhir/Observation/a.b/_history/2")
    assert versioned is not None
    assert (versioned.base, versioned.version_id) == ("http://example.org/fhir", "2")
    assert parse_reference("Unicorn/1") is None
    assert parse_reference("urn:uuid:1234") is None
    assert parse_reference("#contained") is None


def test_rewrite_references_in_nested_elements_and_uris() -> None:
    resource = {
        "subject": {"reference": "urn:uuid:p"},
        "result": [{"reference": "urn:uuid:o1"}, {"reference": "Observation/kept"}],
        "contained": [{"resourceType": "Provenance", "target": [{"reference": "urn:uuid:p"}]}],
        "instantiatesUri": ["urn:uuid:p"],
        "note": [{"text": "urn:uuid:p is only text here, not a whole value"}],
    }
    unresolved = rewrite_references(
        resource, {"urn:uuid:p": "Patient/1", "urn:uuid:o1": "Observation/2"}
    )
    assert unresolved == []
    assert resource["subject"] == {"reference": "Patient/1"}
    assert resource["result"] == [{"reference": "Observation/2"}, {"reference": "Observation/kept"}]
    assert resource["contained"][0]["target"] == [{"reference": "Patient/1"}]
    assert resource["instantiatesUri"] == ["Patient/1"]
    assert resource["note"][0]["text"].startswith("urn:uuid:p is")


def test_rewrite_reports_unresolved_placeholders() -> None:
    resource = {
        "subject": {"reference": "urn:uuid:missing"},
        "focus": [{"reference": "urn:oid:1.2"}],
    }
    assert sorted(rewrite_references(resource, {})) == ["urn:oid:1.2", "urn:uuid:missing"]


def _compartment() -> PatientCompartment:
    return PatientCompartment.load(Path(PROJECT_ROOT / "fhir_profiles"))


def test_compartment_owner_follows_the_definition() -> None:
    compartment = _compartment()
    assert compartment.owner({"resourceType": "Patient", "id": "p1"}) == "p1"
    observation = {
        "resourceType": "Observation",
        "performer": [{"reference": "Patient/b"}],
        "subject": {"reference": "Patient/a"},
    }
    assert compartment.owner(observation) == "a"  # subject is listed before performer
    assert list(compartment.patient_ids(observation)) == ["a", "b"]
    assert (
        compartment.owner({"resourceType": "Observation", "subject": {"reference": "Group/g"}})
        is None
    )
    assert (
        compartment.owner(
            {
                "resourceType": "Provenance",
                "target": [{"reference": "Observation/o"}, {"reference": "Patient/t"}],
            }
        )
        == "t"
    )
    assert (
        compartment.owner(
            {"resourceType": "AllergyIntolerance", "patient": {"reference": "Patient/x"}}
        )
        == "x"
    )
    assert compartment.owner({"resourceType": "Organization", "name": "x"}) is None
    assert (
        compartment.owner(
            {"resourceType": "Observation", "subject": {"reference": "http://elsewhere/Patient/z"}}
        )
        is None
    )
    assert "Encounter" in compartment.member_types()
    assert "Organization" not in compartment.member_types()
