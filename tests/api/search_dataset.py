"""A fixed dataset for the search conformance table (ids chosen by the test)."""

from __future__ import annotations

from typing import Any

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"


def _obs(
    oid: str,
    subject: str,
    code: str,
    display: str,
    value: float | None,
    unit: str,
    status: str = "final",
    **extra: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Observation",
        "id": oid,
        "status": status,
        "code": {"coding": [{"system": LOINC, "code": code, "display": display}]},
        "subject": {"reference": f"Patient/{subject}"},
    }
    if value is not None:
        body["valueQuantity"] = {"value": value, "unit": unit, "system": UCUM, "code": unit}
    body.update(extra)
    return body


RESOURCES: list[dict[str, Any]] = [
    {
        "resourceType": "Organization",
        "id": "org1",
        "name": "Chongqing First Hospital",
        "identifier": [{"system": "urn:org", "value": "CQ1"}],
        "address": [{"city": "Chongqing"}],
    },
    {
        "resourceType": "Organization",
        "id": "org2",
        "name": "West China Hospital",
        "identifier": [{"system": "urn:org", "value": "WC2"}],
        "address": [{"city": "Chengdu"}],
    },
    {
        "resourceType": "Patient",
        "id": "p1",
        "active": True,
        "meta": {
            "profile": ["http://example.org/StructureDefinition/cn-patient"],
            "source": "urn:source:his",
        },
        "identifier": [
            {
                "type": {"coding": [{"system": V2_0203, "code": "MR"}]},
                "system": "urn:mrn",
                "value": "A1",
            }
        ],
        "name": [{"family": "Wang", "given": ["Fang"]}],
        "gender": "female",
        "birthDate": "1968-03-14",
        "telecom": [{"system": "phone", "value": "13800000001"}],
        "address": [{"city": "Chongqing"}],
        "managingOrganization": {"reference": "Organization/org1"},
    },
    {
        "resourceType": "Patient",
        "id": "p2",
        "meta": {"tag": [{"system": "urn:t", "code": "vip"}]},
        "identifier": [{"system": "urn:mrn", "value": "B2"}],
        "name": [{"family": "Li", "given": ["Jianguo"], "text": "李建国"}],
        "gender": "male",
        "birthDate": "1955-11-02",
        "deceasedBoolean": False,
        "managingOrganization": {"reference": "Organization/org2"},
    },
    {
        "resourceType": "Patient",
        "id": "p3",
        "meta": {
            "security": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}
            ]
        },
        "name": [{"family": "Müller", "given": ["Xiaoyu"]}],
        "gender": "female",
        "birthDate": "1992-07",
    },
    _obs(
        "o1",
        "p1",
        "2345-7",
        "Glucose [Mass/volume] in Serum",
        5.8,
        "mmol/L",
        effectiveDateTime="2026-11-02T09:30:00Z",
        performer=[{"reference": "Organization/org1"}],
        category=[
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "laboratory",
                    }
                ]
            }
        ],
    ),
    _obs("o2", "p1", "4548-4", "Hemoglobin A1c", 6.1, "%", effectiveDateTime="2025-06-15"),
    _obs(
        "o3",
        "p2",
        "2345-7",
        "Glucose [Mass/volume] in Serum",
        7.2,
        "mmol/L",
        status="preliminary",
        effectiveDateTime="2026-01-10",
        performer=[
            {"reference": "Organization/org2", "identifier": {"system": "urn:org", "value": "WC2"}}
        ],
    ),
    _obs(
        "o4",
        "p3",
        "85354-9",
        "Blood pressure panel",
        None,
        "",
        effectivePeriod={"start": "2026-03-01", "end": "2026-03-02"},
        component=[
            {
                "code": {"coding": [{"system": LOINC, "code": "8480-6"}]},
                "valueQuantity": {"value": 120, "unit": "mm[Hg]", "system": UCUM, "code": "mm[Hg]"},
            },
            {
                "code": {"coding": [{"system": LOINC, "code": "8462-4"}]},
                "valueQuantity": {"value": 80, "unit": "mm[Hg]", "system": UCUM, "code": "mm[Hg]"},
            },
        ],
    ),
    {
        "resourceType": "RiskAssessment",
        "id": "ra1",
        "status": "final",
        "subject": {"reference": "Patient/p1"},
        "prediction": [{"probabilityDecimal": 0.2}],
    },
    {
        "resourceType": "RiskAssessment",
        "id": "ra2",
        "status": "final",
        "subject": {"reference": "Patient/p2"},
        "prediction": [{"probabilityDecimal": 0.85}],
    },
    {
        "resourceType": "RiskAssessment",
        "id": "ra3",
        "status": "final",
        "subject": {"reference": "Patient/p3"},
        "prediction": [{"probabilityDecimal": 0.36412818541523473}],  # 17 significant digits
    },
    {
        "resourceType": "Observation",
        "id": "o9",
        "status": "cancelled",
        "code": {
            "coding": [{"system": LOINC, "code": "29463-7", "display": "Zeta mass"}],
            "text": "Omega measure",
        },
        "identifier": [{"type": {"text": "Lab accession"}, "system": "urn:acc", "value": "X9"}],
    },
    {
        "resourceType": "Questionnaire",
        "id": "q1",
        "status": "active",
        "url": "http://example.org/fhir/Questionnaire/intake",
    },
    {
        "resourceType": "Questionnaire",
        "id": "q2",
        "status": "active",
        "url": "http://example.org/fhir/Questionnaire/intake/v2",
    },
]

# (query, expected ids in any order) or (query, [ids in this order]) for sorted queries
CASES: list[tuple[str, set[str] | list[str]]] = [
    # string: prefix, case and accent insensitive; :exact; :contains; :missing
    ("Patient?family=wan", {"p1"}),
    ("Patient?family=WANG", {"p1"}),
    ("Patient?family=muller", {"p3"}),
    ("Patient?family:exact=Wang", {"p1"}),
    ("Patient?family:exact=wang", set()),
    ("Patient?family:contains=ll", {"p3"}),
    ("Patient?name=jian", {"p2"}),
    ("Patient?name=李建", {"p2"}),
    ("Patient?address-city=chongqing", {"p1"}),
    ("Patient?address-city:missing=true", {"p2", "p3"}),
    ("Patient?address-city:missing=false", {"p1"}),
    # token: code, system|code, system|, |code, :not, :text, :of-type, booleans, ContactPoint
    ("Patient?gender=female", {"p1", "p3"}),
    ("Patient?gender:not=female", {"p2"}),
    ("Patient?identifier=urn:mrn|A1", {"p1"}),
    ("Patient?identifier=A1", {"p1"}),
    ("Patient?identifier=urn:mrn|", {"p1", "p2"}),
    ("Patient?identifier=|A1", set()),
    ("Patient?identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|A1", {"p1"}),
    # every Patient carries the lifelong record number the server assigns
    ("Patient?identifier:missing=true", set()),
    ("Patient?identifier:missing=false", {"p1", "p2", "p3"}),
    ("Observation?code:text=gluc", {"o1", "o3"}),
    # :text: CodeableConcept.text and every Coding.display, Identifier.type.text
    ("Observation?code:text=zeta", {"o9"}),
    ("Observation?code:text=omega meas", {"o9"}),
    ("Observation?identifier:text=lab acc", {"o9"}),
    ("Observation?identifier:text=zeta", set()),
    ("Patient?phone=13800000001", {"p1"}),
    ("Patient?active=true", {"p1"}),
    ("Patient?deceased=true", set()),
    ("Observation?status=final,preliminary", {"o1", "o2", "o3", "o4"}),
    # date: every prefix, partial dates, periods
    ("Patient?birthdate=1968", {"p1"}),
    ("Patient?birthdate=1968-03", {"p1"}),
    ("Patient?birthdate=eq1968-03-14", {"p1"}),
    ("Patient?birthdate=ne1968-03-14", {"p2", "p3"}),
    ("Patient?birthdate=gt1968-03-14", {"p3"}),
    ("Patient?birthdate=lt1960", {"p2"}),
    ("Patient?birthdate=ge1990", {"p3"}),
    ("Patient?birthdate=le1968-03-14", {"p1", "p2"}),
    ("Patient?birthdate=sa1968-03-14", {"p3"}),
    ("Patient?birthdate=eb1968", {"p2"}),
    ("Patient?birthdate=1992", {"p3"}),
    ("Patient?birthdate=1992-07-15", set()),
    ("Observation?date=ap2026-11-02", {"o1"}),
    ("Observation?date=2026-03", {"o4"}),
    ("Observation?date=2026-03-01", set()),
    ("Observation?date=ge2026-03-02", {"o1", "o4"}),
    # reference: type/id, bare id, absolute URL, :Type, :identifier, chains, _has
    ("Observation?subject=Patient/p1", {"o1", "o2"}),
    ("Observation?subject=p1", {"o1", "o2"}),
    ("Observation?subject=http://testserver/fhir/Patient/p1", {"o1", "o2"}),
    ("Observation?patient=p2", {"o3"}),
    ("Observation?subject:Patient=p3", {"o4"}),
    ("Observation?subject:Group=p3", set()),
    ("Observation?performer:identifier=urn:org|WC2", {"o3"}),
    ("Observation?subject:Patient.family=li", {"o3"}),
    ("Observation?patient.gender=female", {"o1", "o2", "o4"}),
    ("Observation?subject:Patient.organization.name=west", {"o3"}),
    ("Patient?_has:Observation:patient:code=4548-4", {"p1"}),
    ("Patient?_has:Observation:subject:value-quantity=gt7", {"p2"}),
    # quantity: precision, units, every prefix
    ("Observation?value-quantity=5.8", {"o1"}),
    ("Observation?value-quantity=5.80", {"o1"}),
    ("Observation?value-quantity=6", {"o1", "o2"}),
    ("Observation?value-quantity=5.8|http://unitsofmeasure.org|mmol/L", {"o1"}),
    ("Observation?value-quantity=5.8||mmol/L", {"o1"}),
    ("Observation?value-quantity=5.8||%", set()),
    ("Observation?value-quantity=gt6", {"o2", "o3"}),
    ("Observation?value-quantity=lt6", {"o1"}),
    ("Observation?value-quantity=ge6.1", {"o2", "o3"}),
    ("Observation?value-quantity=le5.8", {"o1"}),
    ("Observation?value-quantity=ne5.8", {"o2", "o3"}),
    ("Observation?value-quantity=ap7", {"o3"}),
    ("Observation?value-quantity=sa6", {"o2", "o3"}),
    ("Observation?value-quantity=eb6", {"o1"}),
    # number
    ("RiskAssessment?probability=0.2", {"ra1"}),
    ("RiskAssessment?probability=gt0.5", {"ra2"}),
    ("RiskAssessment?probability=le0.2", {"ra1"}),
    # exact decimals: eq of a stored value finds it, ne leaves it out, and the implicit
    # range follows the digits written
    ("RiskAssessment?probability=0.36412818541523473", {"ra3"}),
    ("RiskAssessment?probability=eq0.36412818541523473", {"ra3"}),
    ("RiskAssessment?probability=ne0.36412818541523473", {"ra1", "ra2"}),
    ("RiskAssessment?probability=0.3641281854152347", {"ra3"}),
    ("RiskAssessment?probability=0.36412818541523474", set()),
    ("RiskAssessment?probability=gt0.36412818541523472", {"ra2", "ra3"}),
    # uri
    ("Questionnaire?url=http://example.org/fhir/Questionnaire/intake", {"q1"}),
    ("Questionnaire?url:below=http://example.org/fhir", {"q1", "q2"}),
    ("Questionnaire?url:above=http://example.org/fhir/Questionnaire/intake/v2/x", {"q1", "q2"}),
    # composite
    ("Observation?component-code-value-quantity=http://loinc.org|8480-6$gt100", {"o4"}),
    ("Observation?component-code-value-quantity=http://loinc.org|8480-6$lt100", set()),
    ("Observation?code-value-quantity=2345-7$gt7", {"o3"}),
    # union parameters (combo-*) searched through the parameters they unite
    ("Observation?combo-code=8480-6", {"o4"}),
    ("Observation?combo-code=2345-7", {"o1", "o3"}),
    ("Observation?combo-value-quantity=gt100", {"o4"}),
    ("Observation?combo-code-value-quantity=http://loinc.org|8480-6$gt100", {"o4"}),
    ("Observation?combo-code:missing=true", set()),
    (
        "Observation?_sort=combo-value-quantity&combo-value-quantity:missing=false",
        ["o1", "o2", "o3", "o4"],
    ),
    # _id, _lastUpdated, meta parameters
    ("Patient?_id=p1,p2", {"p1", "p2"}),
    ("Patient?_id=|p1", {"p1"}),  # a token without a system, as an id is
    ("Patient?_id=urn:x|p1", set()),
    ("Patient?_lastUpdated=gt2000-01-01", {"p1", "p2", "p3"}),
    ("Patient?_lastUpdated=lt2000-01-01", set()),
    ("Patient?_tag=urn:t|vip", {"p2"}),
    ("Patient?_profile=http://example.org/StructureDefinition/cn-patient", {"p1"}),
    ("Patient?_security=http://terminology.hl7.org/CodeSystem/v3-Confidentiality|R", {"p3"}),
    ("Patient?_source=urn:source:his", {"p1"}),
    # AND (repeated) and OR (comma)
    ("Observation?code=2345-7,4548-4&subject=p1", {"o1", "o2"}),
    ("Observation?value-quantity=gt5&value-quantity=lt6", {"o1"}),
    # sorting
    ("Patient?_sort=birthdate", ["p2", "p1", "p3"]),
    ("Patient?_sort=-birthdate", ["p3", "p1", "p2"]),
    ("Observation?_sort=-value-quantity&value-quantity:missing=false", ["o3", "o2", "o1"]),
    ("Patient?_sort=gender,-birthdate", ["p3", "p1", "p2"]),
]


def dataset_bundle() -> dict[str, Any]:
    """The dataset as one transaction (PUTs with the ids chosen here)."""
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
            for r in RESOURCES
        ],
    }
