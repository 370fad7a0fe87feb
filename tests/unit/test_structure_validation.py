"""The R4 types without an R4B model are checked against their R4 StructureDefinitions."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from ehr_service.fhir.structure_validation import (
    MAX_DEPTH,
    STRUCTURE_ONLY_TYPES,
    STRUCTURES_FILE,
    structure_only_types,
    validate_structure,
)

EIGHTEEN = {
    "EffectEvidenceSynthesis",
    "MedicinalProduct",
    "MedicinalProductAuthorization",
    "MedicinalProductContraindication",
    "MedicinalProductIndication",
    "MedicinalProductIngredient",
    "MedicinalProductInteraction",
    "MedicinalProductManufactured",
    "MedicinalProductPackaged",
    "MedicinalProductPharmaceutical",
    "MedicinalProductUndesirableEffect",
    "RiskEvidenceSynthesis",
    "SubstanceNucleicAcid",
    "SubstancePolymer",
    "SubstanceProtein",
    "SubstanceReferenceInformation",
    "SubstanceSourceMaterial",
    "SubstanceSpecification",
}


def medicinal_product() -> dict[str, Any]:
    return {
        "resourceType": "MedicinalProduct",
        "id": "aspirin-100",
        "meta": {
            "versionId": "3",
            "lastUpdated": "2024-05-01T10:00:00.123Z",
            "profile": ["http://example.org/fhir/StructureDefinition/mp"],
            "tag": [{"system": "urn:tags", "code": "demo"}],
        },
        "text": {
            "status": "generated",
            "div": '<div xmlns="http://www.w3.org/1999/xhtml">Aspirin 100 mg</div>',
        },
        "contained": [
            {"resourceType": "SubstanceProtein", "id": "p1", "numberOfSubunits": 1},
            {"resourceType": "Organization", "id": "org", "name": "Acme Pharma"},
        ],
        "extension": [
            {
                "url": "http://example.org/ext/strength",
                "valueQuantity": {
                    "value": 100,
                    "unit": "mg",
                    "system": "http://unitsofmeasure.org",
                    "code": "mg",
                },
            },
            {
                "url": "http://example.org/ext/pair",
                "extension": [
                    {"url": "first", "valueBoolean": True},
                    {"url": "second", "valueDecimal": 0.25},
                ],
            },
        ],
        "modifierExtension": [{"url": "http://example.org/ext/m", "valueCode": "ok"}],
        "identifier": [
            {"system": "urn:oid:1.2.3", "value": "MP-1", "period": {"start": "2020-01"}}
        ],
        "type": {"coding": [{"system": "http://example.org/type", "code": "MP"}], "text": "MP"},
        "domain": {"system": "http://hl7.org/fhir/medicinal-product-domain", "code": "Human"},
        "specialMeasures": ["Keep dry", None],
        "_specialMeasures": [
            None,
            {"extension": [{"url": "http://example.org/ext/why", "valueCode": "withheld"}]},
        ],
        "marketingStatus": [
            {
                "country": {"text": "NL"},
                "status": {"text": "active"},
                "dateRange": {"start": "2020-01-01"},
            }
        ],
        "pharmaceuticalProduct": [{"reference": "#p1"}],
        "name": [
            {
                "productName": "Aspirin 100 mg tablets",
                "_productName": {"id": "pn"},
                "namePart": [{"part": "Aspirin", "type": {"code": "INV"}}],
                "countryLanguage": [
                    {
                        "country": {"text": "NL"},
                        "language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "nl"}]},
                    }
                ],
            }
        ],
        "manufacturingBusinessOperation": [
            {
                "effectiveDate": "2019-06-30T12:00:00+02:00",
                "manufacturer": [{"reference": "#org", "display": "Acme"}],
            }
        ],
        "specialDesignation": [
            {"indicationCodeableConcept": {"text": "Pain"}, "date": "2021-03-04"}
        ],
    }


def substance_protein() -> dict[str, Any]:
    return {
        "resourceType": "SubstanceProtein",
        "id": "insulin",
        "sequenceType": {"coding": [{"system": "http://example.org/seq", "code": "complete"}]},
        "numberOfSubunits": 2,
        "disulfideLinkage": ["A6-A11", "A7-B7"],
        "subunit": [
            {
                "subunit": 1,
                "sequence": "GIVEQCCTSICSLYQLENYCN",
                "length": 21,
                "sequenceAttachment": {
                    "contentType": "text/plain",
                    "data": "R0lWRVFD Q1RTSUNT\nTFlRTEVOWUNO",
                    "size": 21,
                },
                "nTerminalModificationId": {"system": "urn:x", "value": "n1"},
                "nTerminalModification": "none",
            },
            {
                "subunit": 2,
                "sequence": "FVNQHLCGSHLVEALYLVCGERGFFYTPKT",
                "length": 30,
                "cTerminalModification": "amide",
                "extension": [{"url": "http://example.org/ext/chain", "valueString": "B"}],
            },
        ],
    }


def found(resource: dict[str, Any], resource_type: str | None = None) -> set[tuple[str, str]]:
    issues = validate_structure(resource, resource_type)
    assert all(len(issue.expression) == 1 and issue.severity == "error" for issue in issues)
    return {(issue.code or "", issue.expression[0]) for issue in issues}


def test_shipped_definitions_cover_all_18_types() -> None:
    assert STRUCTURE_ONLY_TYPES == EIGHTEEN == structure_only_types()
    assert STRUCTURES_FILE.parent.name == "fhir_profiles"
    document = json.loads(STRUCTURES_FILE.read_text(encoding="utf-8"))
    assert set(document["resources"]) == EIGHTEEN
    for name in EIGHTEEN:
        assert document["types"][name]["kind"] == "resource"
        assert document["types"][name]["elements"]["id"][2] == ["id"]
    for datatype in (
        "Element",
        "BackboneElement",
        "Extension",
        "Meta",
        "Narrative",
        "Reference",
        "CodeableConcept",
        "Quantity",
        "SimpleQuantity",
    ):
        assert datatype in document["types"]
    assert {"string", "boolean", "integer", "decimal", "dateTime"} <= set(document["primitives"])


def test_valid_resources_have_no_issues() -> None:
    assert validate_structure(medicinal_product()) == []
    assert validate_structure(medicinal_product(), "MedicinalProduct") == []
    assert validate_structure(substance_protein()) == []


def test_unknown_elements() -> None:
    resource = medicinal_product()
    resource["bogus"] = 1
    resource["name"][0]["nickname"] = "A"
    resource["identifier"][0]["foo"] = "x"
    resource["meta"]["project"] = "p1"  # in the shared snapshot, but not R4
    resource["_name"] = {"id": "x"}  # `_` only for primitives
    resource["name"][0]["_id"] = {"id": "x"}  # Element.id is an attribute: no `_id`
    resource["type"]["resourceType"] = "CodeableConcept"
    resource[""] = "x"
    assert found(resource) == {
        ("structure", "MedicinalProduct."),
        ("structure", "MedicinalProduct.bogus"),
        ("structure", "MedicinalProduct.name[0].nickname"),
        ("structure", "MedicinalProduct.identifier[0].foo"),
        ("structure", "MedicinalProduct.meta.project"),
        ("structure", "MedicinalProduct._name"),
        ("structure", "MedicinalProduct.name[0]._id"),
        ("structure", "MedicinalProduct.type.resourceType"),
    }


def test_required_elements() -> None:
    missing_name = medicinal_product()
    del missing_name["name"]
    assert found(missing_name) == {("required", "MedicinalProduct.name")}

    resource = medicinal_product()
    resource["name"] = [{"namePart": [{}, {"part": "A"}]}]
    resource["text"] = {"status": "generated"}
    resource["extension"] = [{"valueString": "no url"}]
    resource["modifierExtension"] = [{"url": "urn:m", "extension": [{"valueInteger": 1}]}]
    assert found(resource) == {
        ("required", "MedicinalProduct.name[0].productName"),
        ("structure", "MedicinalProduct.name[0].namePart[0]"),  # empty object
        ("required", "MedicinalProduct.name[0].namePart[1].type"),
        ("required", "MedicinalProduct.text.div"),
        ("required", "MedicinalProduct.extension[0].url"),
        ("required", "MedicinalProduct.modifierExtension[0].extension[0].url"),
    }


def test_a_primitive_with_only_extensions_counts_as_present() -> None:
    resource = medicinal_product()
    del resource["name"][0]["productName"]
    resource["name"][0]["_productName"] = {
        "extension": [
            {
                "url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
                "valueCode": "masked",
            }
        ]
    }
    assert found(resource) == set()


def test_arrays_and_single_values() -> None:
    resource = medicinal_product()
    resource["name"] = {"namePart": [{"part": "A", "type": {"code": "X"}}]}
    resource["type"] = [{"text": "x"}]
    resource["specialMeasures"] = "Keep dry"
    del resource["_specialMeasures"]
    # Content is still checked where the shape is wrong.
    assert found(resource) == {
        ("structure", "MedicinalProduct.name"),
        ("required", "MedicinalProduct.name.productName"),
        ("structure", "MedicinalProduct.type"),
        ("structure", "MedicinalProduct.specialMeasures"),
    }


def test_choice_types() -> None:
    resource = medicinal_product()
    resource["specialDesignation"] = [
        {"indicationReference": {"reference": "Condition/1"}},
        {"indicationString": "pain"},
        {"indicationCodeableConcept": {"text": "a"}, "indicationReference": {"display": "b"}},
    ]
    resource["extension"] = [
        {"url": "urn:a", "valueString": "x", "_valueString": {"id": "v"}},
        {"url": "urn:b", "valueString": "x", "valueInteger": 1},
        {"url": "urn:c", "valueUnicorn": 1},
        {"url": "urn:d", "valueQuantity": {"value": "100"}},
    ]
    assert found(resource) == {
        ("structure", "MedicinalProduct.specialDesignation[1].indicationString"),
        ("structure", "MedicinalProduct.specialDesignation[2].indicationReference"),
        ("structure", "MedicinalProduct.extension[1].valueInteger"),
        ("structure", "MedicinalProduct.extension[2].valueUnicorn"),
        ("value", "MedicinalProduct.extension[3].valueQuantity.value"),
    }


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("numberOfSubunits",), "2"),
        (("numberOfSubunits",), 2.5),
        (("numberOfSubunits",), True),
        (("numberOfSubunits",), 2**31),
        (("disulfideLinkage", 1), 7),
        (("subunit", 0, "sequence"), {"text": "x"}),
        (("subunit", 0, "sequenceAttachment", "size"), -1),  # unsignedInt
        (("subunit", 0, "sequenceAttachment", "data"), "abc"),  # base64Binary
        (("subunit", 0, "sequenceAttachment", "contentType"), " text/plain"),  # code
        (("subunit", 0, "sequenceAttachment", "url"), "http://x/a b"),  # url
        (("subunit", 0, "sequenceAttachment", "creation"), "2020-13-01"),  # dateTime
        (("subunit", 0, "sequenceAttachment", "creation"), "2020-01-01T10:00"),
        (("subunit", 0, "nTerminalModificationId", "period", "start"), 20200101),
        (("id",), "not valid!"),
        (("meta", "lastUpdated"), "2024-05-01"),  # instant needs a time
        (("meta", "versionId"), "x" * 65),  # id: at most 64
    ],
)
def test_primitive_json_types_and_regexes(path: tuple[str | int, ...], value: Any) -> None:
    resource = substance_protein()
    resource["meta"] = {"versionId": "1"}
    resource["subunit"][0]["nTerminalModificationId"]["period"] = {"start": "2020"}
    holder: Any = resource
    for step in path[:-1]:
        holder = holder[step]
    holder[path[-1]] = value
    expression = "SubstanceProtein" + "".join(
        f"[{step}]" if isinstance(step, int) else f".{step}" for step in path
    )
    assert found(resource) == {("value", expression)}


def test_decimal_and_boolean_values() -> None:
    spec = {
        "resourceType": "SubstanceSpecification",
        "name": [{"name": "insulin", "preferred": "true"}],
        "moiety": [{"amountQuantity": {"value": 1.5e-3}}, {"amountQuantity": {"value": True}}],
    }
    assert found(spec) == {
        ("value", "SubstanceSpecification.name[0].preferred"),
        ("value", "SubstanceSpecification.moiety[1].amountQuantity.value"),
    }


def test_base64_regex_does_not_backtrack_exponentially() -> None:
    resource = substance_protein()
    resource["subunit"][0]["sequenceAttachment"]["data"] = " ".join(["QUFB"] * 40) + " !"
    started = time.perf_counter()
    assert found(resource) == {("value", "SubstanceProtein.subunit[0].sequenceAttachment.data")}
    assert time.perf_counter() - started < 0.5


def test_primitive_extension_siblings() -> None:
    resource = medicinal_product()
    resource["specialMeasures"] = ["a", None, "c", None]
    resource["_specialMeasures"] = [None, {"id": "b"}, None, None]
    resource["name"][0]["_productName"] = [{"id": "x"}]  # max 1: an object
    resource["name"][0]["namePart"][0]["_part"] = "x"
    resource["marketingStatus"][0]["_restoreDate"] = {}
    assert found(resource) == {
        ("structure", "MedicinalProduct._specialMeasures[3]"),  # null on both sides
        ("structure", "MedicinalProduct.specialMeasures[3]"),
        ("structure", "MedicinalProduct.name[0]._productName"),
        ("structure", "MedicinalProduct.name[0].namePart[0]._part"),
        ("structure", "MedicinalProduct.marketingStatus[0]._restoreDate"),
    }
    resource = medicinal_product()
    resource["_specialMeasures"] = {"id": "x"}  # must be an array
    assert found(resource) == {
        ("structure", "MedicinalProduct._specialMeasures"),
        ("structure", "MedicinalProduct.specialMeasures[1]"),  # null without an extension
    }
    resource["_specialMeasures"] = [{"id": "x"}, {"id": "y"}, {"id": "z"}]
    assert found(resource) == {("structure", "MedicinalProduct._specialMeasures")}


def test_resource_type() -> None:
    assert found({"id": "x"}) == {("required", "Resource.resourceType")}
    assert found({"resourceType": "SubstanceProtein"}, "MedicinalProduct") == {
        ("invalid", "MedicinalProduct.resourceType")
    }
    assert found({"resourceType": "Patient"}) == {("not-supported", "Patient.resourceType")}
    assert found({"resourceType": 7}) == {("value", "Resource.resourceType")}


def test_nested_datatypes_and_profiles() -> None:
    info = {
        "resourceType": "SubstanceReferenceInformation",
        "target": [
            {"amountRange": {"low": {"value": 1, "comparator": "<"}, "high": {"value": 5}}},
            {"amountQuantity": {"value": 1, "comparator": "<"}},  # plain Quantity: allowed
            {"source": [{"identifier": {"assigner": {"identifier": {"period": {"end": "x"}}}}}]},
        ],
    }
    assert found(info) == {
        # Range.low is a SimpleQuantity: comparator has max 0
        ("structure", "SubstanceReferenceInformation.target[0].amountRange.low.comparator"),
        (
            "value",
            "SubstanceReferenceInformation.target[2].source[0].identifier.assigner.identifier"
            ".period.end",
        ),
    }


def test_content_references() -> None:
    packaged = {
        "resourceType": "MedicinalProductPackaged",
        "packageItem": [
            {
                "type": {"text": "box"},
                "quantity": {"value": 1},
                "packageItem": [
                    {
                        "type": {"text": "blister"},
                        "colour": "red",
                        "packageItem": [{"quantity": {"value": 10}}],
                    }
                ],
            }
        ],
    }
    assert found(packaged) == {
        ("required", "MedicinalProductPackaged.packageItem[0].packageItem[0].quantity"),
        ("structure", "MedicinalProductPackaged.packageItem[0].packageItem[0].colour"),
        ("required", "MedicinalProductPackaged.packageItem[0].packageItem[0].packageItem[0].type"),
    }
    spec = {
        "resourceType": "SubstanceSpecification",
        "name": [
            {
                "name": "insulin",
                "synonym": [{"preferred": True}],
                "translation": [{"name": "insuline", "language": [{"text": "fr"}]}],
            }
        ],
        "molecularWeight": [{"amount": {"value": "5808"}}],
        "structure": {"molecularWeight": {"method": {"text": "calc"}}},
    }
    assert found(spec) == {
        ("required", "SubstanceSpecification.name[0].synonym[0].name"),
        ("value", "SubstanceSpecification.molecularWeight[0].amount.value"),
    }


def test_contained_resources() -> None:
    resource = medicinal_product()
    resource["contained"] = [
        {"resourceType": "SubstanceProtein", "numberOfSubunits": "2", "bogus": True},
        {"resourceType": "Patient", "anything": {"goes": "here"}},  # R4B validates those
        {"id": "no-type"},
        "Organization",
    ]
    assert found(resource) == {
        ("value", "MedicinalProduct.contained[0].numberOfSubunits"),
        ("structure", "MedicinalProduct.contained[0].bogus"),
        ("structure", "MedicinalProduct.contained[2]"),
        ("structure", "MedicinalProduct.contained[3]"),
    }


def test_extensions() -> None:
    resource = medicinal_product()
    resource["extension"] = ["urn:x", {"url": "urn:y", "extension": [{"url": "z", "bad": 1}]}]
    resource["name"][0]["modifierExtension"] = [{"valueBoolean": False}]
    assert found(resource) == {
        ("structure", "MedicinalProduct.extension[0]"),
        ("structure", "MedicinalProduct.extension[1].extension[0].bad"),
        ("required", "MedicinalProduct.name[0].modifierExtension[0].url"),
    }


def test_empty_values_and_nulls() -> None:
    resource = medicinal_product()
    resource["text"] = {}
    resource["identifier"] = []
    resource["name"][0]["productName"] = ""
    resource["type"] = None
    assert found(resource) == {
        ("structure", "MedicinalProduct.text"),
        ("structure", "MedicinalProduct.identifier"),
        ("structure", "MedicinalProduct.name[0].productName"),
        ("structure", "MedicinalProduct.type"),
    }


def test_every_problem_is_reported() -> None:
    resource = substance_protein() | {
        "numberOfSubunits": "two",
        "disulfideLinkage": "A6-A11",
        "sequenceType": [{"text": "x"}],
        "extra": True,
        "text": {"div": "<div>x</div>"},
    }
    resource["subunit"][1]["length"] = -3.5
    resource["subunit"][1]["extension"].append({"valueString": ""})
    issues = validate_structure(resource)
    assert {(i.code, i.expression[0]) for i in issues} == {
        ("value", "SubstanceProtein.numberOfSubunits"),
        ("structure", "SubstanceProtein.disulfideLinkage"),
        ("structure", "SubstanceProtein.sequenceType"),
        ("structure", "SubstanceProtein.extra"),
        ("required", "SubstanceProtein.text.status"),
        ("value", "SubstanceProtein.subunit[1].length"),
        ("required", "SubstanceProtein.subunit[1].extension[1].url"),
        ("structure", "SubstanceProtein.subunit[1].extension[1].valueString"),
    }
    assert len(issues) == 8
    assert all(i.diagnostics for i in issues)


def test_deep_nesting_is_refused_without_crashing() -> None:
    item: dict[str, Any] = {"type": {"text": "t"}, "quantity": {"value": 1}}
    root = item
    for _ in range(MAX_DEPTH + 50):
        child = {"type": {"text": "t"}, "quantity": {"value": 1}}
        item["packageItem"] = [child]
        item = child
    issues = validate_structure({"resourceType": "MedicinalProductPackaged", "packageItem": [root]})
    assert [i.code for i in issues] == ["structure"]
    assert "levels deep" in issues[0].diagnostics
