"""Compiled search-parameter extractors and the index rows they produce."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from ehr_service.config import PROJECT_ROOT
from ehr_service.fhir.fhirpath import (
    UnsupportedExpressionError,
    compile_expression,
    compile_relative,
)
from ehr_service.fhir.search.registry import load_registry
from ehr_service.fhir.search.values import index_rows, normalise

REGISTRY = load_registry(PROJECT_ROOT / "fhir_profiles")


def test_every_official_expression_compiles() -> None:
    compiled = sum(len(REGISTRY.indexed(t)) for t in ("Patient", "Observation", "Encounter"))
    assert compiled > 60
    assert REGISTRY.get("Observation", "date").extract is not None


def test_fhirpath_subset() -> None:
    obs = {
        "resourceType": "Observation",
        "valueQuantity": {"value": 5},
        "subject": {"reference": "Patient/1"},
        "effectivePeriod": {"start": "2020"},
    }
    value = compile_expression("(Observation.value as Quantity)", "Observation")
    assert value is not None and value(obs) == [{"value": 5}]
    patients = compile_expression("Observation.subject.where(resolve() is Patient)", "Observation")
    groups = compile_expression("Observation.subject.where(resolve() is Group)", "Observation")
    assert patients is not None and patients(obs) == [{"reference": "Patient/1"}]
    assert groups is not None and groups(obs) == []
    assert compile_expression("Patient.name", "Observation") is None
    effective = compile_expression(
        "Observation.effective", "Observation", frozenset({"Observation.effective"})
    )
    assert effective is not None and effective(obs) == [{"start": "2020"}]
    phones = compile_expression("Patient.telecom.where(system='phone')", "Patient")
    assert phones is not None and phones(
        {"telecom": [{"system": "phone", "value": "1"}, {"system": "email", "value": "e"}]}
    ) == [{"system": "phone", "value": "1"}]
    chromosome = compile_relative("%resource.referenceSeq.chromosome")
    assert chromosome({}, {"referenceSeq": {"chromosome": {"text": "1"}}}) == [{"text": "1"}]
    with pytest.raises(UnsupportedExpressionError):
        compile_expression("Patient.name.first().family", "Patient")


def test_index_rows_of_an_observation() -> None:
    rows = index_rows(
        REGISTRY,
        {
            "resourceType": "Observation",
            "id": "o",
            "status": "final",
            "meta": {"tag": [{"system": "urn:t", "code": "x"}]},
            "code": {
                "coding": [{"system": "http://loinc.org", "code": "2345-7", "display": "Glucose"}]
            },
            "subject": {"reference": "Patient/p"},
            "effectiveDateTime": "2024-02",
            "valueQuantity": {
                "value": 5.8,
                "unit": "mmol/L",
                "system": "http://unitsofmeasure.org",
                "code": "mmol/L",
            },
        },
    )
    assert ("code", "http://loinc.org", "2345-7", "glucose") in rows.tokens
    assert ("_tag", "urn:t", "x", None) in rows.tokens
    assert ("subject", "Patient", "p", None, None, None) in rows.references
    assert ("patient", "Patient", "p", None, None, None) in rows.references
    assert (
        "date",
        datetime(2024, 2, 1, tzinfo=UTC),
        datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC),
    ) in rows.dates
    assert (
        "value-quantity",
        Decimal("5.8"),
        "http://unitsofmeasure.org",
        "mmol/L",
    ) in rows.quantities
    assert (
        "code-value-quantity",
        "http://loinc.org",
        "2345-7",
        "http://unitsofmeasure.org",
        "mmol/L",
        Decimal("5.8"),
        None,
        None,
    ) in rows.composites
    for name in rows.__slots__:
        values = getattr(rows, name)
        assert len(values) == len(set(values)), name  # no duplicate rows


def test_index_rows_of_a_patient() -> None:
    rows = index_rows(
        REGISTRY,
        {
            "resourceType": "Patient",
            "id": "p",
            "name": [{"family": "Müller", "given": ["Anna"]}, {"given": ["Anna"]}],
            "identifier": [
                {
                    "type": {"coding": [{"system": "urn:v2", "code": "MR"}]},
                    "system": "urn:mrn",
                    "value": "A1",
                }
            ],
            "telecom": [{"system": "phone", "value": "138"}],
            "active": True,
        },
    )
    assert ("family", "muller", "Müller") in rows.strings
    assert [r for r in rows.strings if r[0] == "given"] == [("given", "anna", "Anna")]
    assert ("identifier", "urn:mrn", "A1", None) in rows.tokens
    assert ("identifier:of-type", "urn:v2|MR", "A1", None) in rows.tokens
    assert ("phone", None, "138", None) in rows.tokens
    assert ("active", None, "true", None) in rows.tokens
    assert ("deceased", None, "false", None) in rows.tokens


def test_normalise() -> None:
    assert normalise("  Zoë   MÜLLER ") == "zoe muller"
    assert normalise("王 芳") == "王 芳"
