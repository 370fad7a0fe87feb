"""The FHIR XML format: JSON → XML → JSON gives the same JSON, an independent parser
reads our XML as the JSON says, and hostile XML is refused with a 400."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.observation import Observation
from lxml import etree

from ehr_service.fhir.errors import FhirError
from ehr_service.fhir.xml import FHIR_NS, NotAResource, json_to_xml, xml_to_json
from tests.conftest import sample_bundles


def _lexical(raw: bytes) -> object:
    """JSON with every number kept as written (so 1.10 and 1.1 differ)."""
    return json.loads(raw, parse_float=lambda s: ("n", s), parse_int=lambda s: ("n", s))


@pytest.mark.parametrize("path", sample_bundles(), ids=lambda p: p.name[:30])
def test_synthea_bundles_round_trip_exactly(path: Path) -> None:
    raw = path.read_bytes()
    assert _lexical(xml_to_json(json_to_xml(raw))) == _lexical(raw)


def test_an_independent_parser_reads_our_xml_as_the_json_says() -> None:
    raw = sample_bundles()[0].read_bytes()
    from_xml = Bundle.model_validate_xml(json_to_xml(raw))
    from_json = Bundle.model_validate_json(raw)
    assert from_xml.model_dump() == from_json.model_dump()


def test_element_order_and_attributes_follow_the_definitions() -> None:
    raw = json.dumps(
        {
            "resourceType": "Observation",
            "valueQuantity": {"value": 1.10, "unit": "mmol/L"},
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
            "id": "o1",
            "extension": [{"url": "urn:x", "valueBoolean": True}],
            "_status": {"id": "s1", "extension": [{"url": "urn:y", "valueInteger": 3}]},
        }
    ).encode()
    root = etree.fromstring(json_to_xml(raw))
    names = [etree.QName(e).localname for e in root]
    assert names == ["id", "extension", "status", "code", "valueQuantity"]
    assert root.find(f"{{{FHIR_NS}}}extension").get("url") == "urn:x"
    status = root.find(f"{{{FHIR_NS}}}status")
    assert status.get("value") == "final" and status.get("id") == "s1"
    assert status.find(f"{{{FHIR_NS}}}extension/{{{FHIR_NS}}}valueInteger").get("value") == "3"
    # the decimal keeps its lexical form: json.dumps wrote 1.1
    assert root.find(f"{{{FHIR_NS}}}valueQuantity/{{{FHIR_NS}}}value").get("value") == "1.1"


def test_decimal_precision_survives_xml_in() -> None:
    body = (
        f'<Observation xmlns="{FHIR_NS}"><status value="final"/><code><text value="x"/></code>'
        '<valueQuantity><value value="1.10"/></valueQuantity></Observation>'
    ).encode()
    assert b'"value":1.10' in xml_to_json(body)


def test_repeating_primitives_align_values_and_extensions() -> None:
    body = (
        f'<Patient xmlns="{FHIR_NS}"><name><given value="A"/>'
        '<given id="g2"><extension url="urn:e"><valueString value="x"/></extension></given>'
        '<given value="C"/></name></Patient>'
    ).encode()
    name = json.loads(xml_to_json(body))["name"][0]
    assert name["given"] == ["A", None, "C"]
    assert name["_given"] == [
        None,
        {"id": "g2", "extension": [{"url": "urn:e", "valueString": "x"}]},
        None,
    ]
    assert _lexical(xml_to_json(json_to_xml(xml_to_json(body)))) == _lexical(xml_to_json(body))


def test_narrative_and_contained_resources() -> None:
    div = '<div xmlns="http://www.w3.org/1999/xhtml"><p>Hello <b>you</b></p></div>'
    raw = json.dumps(
        {
            "resourceType": "Patient",
            "text": {"status": "generated", "div": div},
            "contained": [{"resourceType": "Organization", "id": "o", "name": "H"}],
        }
    ).encode()
    xml = json_to_xml(raw)
    assert b"<contained><Organization>" in xml
    assert json.loads(xml_to_json(xml)) == json.loads(raw)


def test_xml_in_validates_through_the_models() -> None:
    body = (
        f'<Observation xmlns="{FHIR_NS}"><status value="final"/><code><text value="x"/></code>'
        '<valueBoolean value="true"/></Observation>'
    ).encode()
    assert Observation.model_validate_json(xml_to_json(body)).valueBoolean is True


def test_non_resources_have_no_xml_form() -> None:
    with pytest.raises(NotAResource):
        json_to_xml(b'{"transactionTime": "2026-01-01", "output": []}')


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"<Patient", "well-formed"),
        (b"", "empty"),
        (
            b'<?xml version="1.0"?><!DOCTYPE p [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            b'<Patient xmlns="http://hl7.org/fhir"><id value="&x;"/></Patient>',
            "DOCTYPE",
        ),
        (
            b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
            b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
            b'<Patient xmlns="http://hl7.org/fhir"><id value="&b;"/></Patient>',
            "DOCTYPE",
        ),
        (
            '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE p [<!ENTITY x "boom">]>'
            '<Patient xmlns="http://hl7.org/fhir"><id value="&x;"/></Patient>'.encode("utf-16"),
            "DOCTYPE",
        ),
        (b"<Patient><id value='x'/></Patient>", "namespace"),
        (b'<Nonsense xmlns="http://hl7.org/fhir"/>', "resource type"),
        (b'<Patient xmlns="http://hl7.org/fhir"><colour value="red"/></Patient>', "Unknown"),
        (b'<Patient xmlns="http://hl7.org/fhir"><active value="yes"/></Patient>', "boolean"),
        (b'<Patient xmlns="http://hl7.org/fhir">text</Patient>', "value"),
        (b'<Patient xmlns="http://hl7.org/fhir"><gender value="male" x="1"/></Patient>', "attr"),
        (
            b'<Patient xmlns="http://hl7.org/fhir"><gender value="male"/>'
            b'<gender value="female"/></Patient>',
            "only once",
        ),
        (
            b'<Observation xmlns="http://hl7.org/fhir"><valueQuantity>'
            b'<value value="1,&quot;resourceType&quot;:&quot;Patient&quot;"/>'
            b"</valueQuantity></Observation>",
            "decimal",
        ),
        (
            b'<Patient xmlns="http://hl7.org/fhir"><multipleBirthInteger value="1.5"/></Patient>',
            "integer",
        ),
        (
            b'<Patient xmlns="http://hl7.org/fhir"><text><status value="generated"/>'
            b'<div xmlns="http://hl7.org/fhir"/></text></Patient>',
            "XHTML",
        ),
        (
            b'<Bundle xmlns="http://hl7.org/fhir"><entry><resource/></entry></Bundle>',
            "exactly one resource",
        ),
    ],
)
def test_hostile_or_wrong_xml_is_a_400(body: bytes, needle: str) -> None:
    with pytest.raises(FhirError) as caught:
        xml_to_json(body)
    assert caught.value.status == 400
    assert needle.lower() in str(caught.value.issues[0].diagnostics).lower()


def test_deep_nesting_is_refused_not_a_recursion_error() -> None:
    inner = "<extension url='urn:x'>" * 150 + "</extension>" * 150
    body = f'<Patient xmlns="{FHIR_NS}">{inner}</Patient>'.encode()
    with pytest.raises(FhirError) as caught:
        xml_to_json(body)
    assert caught.value.status == 400


def test_characters_xml_cannot_carry_are_replaced_not_a_crash() -> None:
    raw = json.dumps(
        {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "value", "diagnostics": "a\u0002b\ud97d"}],
        }
    ).encode()
    diagnostics = etree.fromstring(json_to_xml(raw)).find(
        f"{{{FHIR_NS}}}issue/{{{FHIR_NS}}}diagnostics"
    )
    assert diagnostics.get("value") == "a\ufffdb\ufffd"
