"""Build profiles/*.json: the service's StructureDefinitions (differentials) and the
ValueSets they bind to:

- resident-patient: a resident's Patient (one ID number slice, one national
  health-record number slice, one health card slice, name, gender and birth date required);
- recognized-lab-observation: a laboratory result fit for mutual recognition;
- recognized-imaging-report / recognized-imaging-study: an imaging report or study
  fit for mutual recognition;
- recognition-institution: an institution's master data, aligned with the
  Chongqing core IG draft's hc-healthcare-organization (http://fhir.cq.hc): unified
  social credit code and practising-licence identifiers sliced by type, WS 218
  type, hospital grade and district extensions, beside our region, level and
  quality-control extensions;
- recognition-practitioner: a practitioner with the practising-certificate number.

Usage: python fhir_profiles/_build_profiles.py
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

BASE = "urn:ehr-service"
ID_NUMBER_SYSTEM = "urn:oid:2.16.156.10011.1.3"
RECORD_NUMBER_SYSTEM = "urn:oid:2.16.156.10011.1.2"  # WS 365 health-record number
HEALTH_CARD_SYSTEM = "urn:oid:2.16.156.10011.1.19"  # resident health card number
ITEMS = "urn:ehr-service:recognition-item"
FHIR_SD = "http://hl7.org/fhir/StructureDefinition"
IG = "http://fhir.cq.hc"
IG_TYPES = f"{IG}/CodeSystem/identifierType-code-system"
CERTIFICATE_SYSTEM = "urn:ehr-service:physician-practising-certificate"


def _identifier_slice(
    resource_type: str, name: str, low: int, pattern: dict[str, Any]
) -> dict[str, Any]:
    return {"id": f"{resource_type}.identifier:{name}", "path": f"{resource_type}.identifier",
            "sliceName": name, "min": low, "max": "1", "patternIdentifier": pattern}  # fmt: skip


def _extension_slice(name: str, url: str, low: int) -> dict[str, Any]:
    return {"id": f"Organization.extension:{name}", "path": "Organization.extension",
            "sliceName": name, "min": low, "max": "1",
            "type": [{"code": "Extension", "profile": [url]}],
            "patternExtension": {"url": url}}  # fmt: skip


def master_data() -> list[dict[str, Any]]:
    def typed(code: str) -> dict[str, Any]:
        return {"use": "official", "type": {"coding": [{"system": IG_TYPES, "code": code}]}}

    institution = [
        _identifier_slice("Organization", "uscc", 0, typed("USCC")),
        _identifier_slice("Organization", "miplrn", 1, typed("MIPLRN")),
        {"path": "Organization.name", "min": 1},
        _extension_slice(
            "institutionType", f"{IG}/StructureDefinition/hc-mdm-healthcareinstitutionstype", 1
        ),
        _extension_slice("hospitalGrade", f"{IG}/StructureDefinition/hc-mdm-hospitallevel", 0),
        _extension_slice("district", f"{IG}/StructureDefinition/hc-mdm-administrativedivision", 1),
        _extension_slice("region", f"{BASE}:extension:region", 1),
        _extension_slice("level", f"{BASE}:extension:institution-level", 0),
    ]
    practitioner = [
        _identifier_slice(
            "Practitioner", "practisingCertificate", 0, {"system": CERTIFICATE_SYSTEM}
        ),
        {"path": "Practitioner.name", "min": 1},
    ]
    return [
        _structure("recognition-institution", "Organization",
                   "An institution's master data (Chongqing core IG hc-healthcare-organization)",
                   institution),
        _structure("recognition-practitioner", "Practitioner",
                   "A practitioner with the practising-certificate number", practitioner),
    ]  # fmt: skip


def _structure(
    name: str, resource_type: str, title: str, elements: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "resourceType": "StructureDefinition",
        "id": name,
        "url": f"{BASE}:StructureDefinition/{name}",
        "version": "2024",
        "name": "".join(part.title() for part in name.split("-")),
        "title": title,
        "status": "active",
        "fhirVersion": "4.0.1",
        "kind": "resource",
        "abstract": False,
        "type": resource_type,
        "baseDefinition": f"{FHIR_SD}/{resource_type}",
        "derivation": "constraint",
        "differential": {"element": [{"id": e.get("id", e["path"]), **e} for e in elements]},
    }


def _reference(*targets: str) -> list[dict[str, Any]]:
    return [{"code": "Reference", "targetProfile": [f"{FHIR_SD}/{t}" for t in targets]}]


def _value_set(name: str, title: str, include: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "ValueSet",
        "id": name,
        "url": f"{BASE}:ValueSet/{name}",
        "version": "2024",
        "name": "".join(part.title() for part in name.split("-")),
        "title": title,
        "status": "active",
        "compose": {"include": include},
    }


def _category(value: str) -> dict[str, str]:
    return {"property": "category", "op": "=", "value": value}


FINAL = f"{BASE}:ValueSet/final-result-status"
LAB_ITEMS = f"{BASE}:ValueSet/recognition-laboratory-items"
IMAGING_ITEMS = f"{BASE}:ValueSet/recognition-imaging-items"


def build() -> list[dict[str, Any]]:
    category = "http://terminology.hl7.org/CodeSystem/observation-category"
    section = "http://terminology.hl7.org/CodeSystem/v2-0074"
    common = [
        {"path": "subject", "min": 1, "type": _reference("Patient")},
        {"path": "effective[x]", "min": 1},
        {"path": "performer", "min": 1},
    ]
    lab = [
        {"path": "Observation.status", "binding": {"strength": "required", "valueSet": FINAL}},
        {"id": "Observation.category:laboratory", "path": "Observation.category",
         "sliceName": "laboratory", "min": 1,
         "patternCodeableConcept": {"coding": [{"system": category, "code": "laboratory"}]}},
        {"path": "Observation.code", "min": 1,
         "binding": {"strength": "required", "valueSet": LAB_ITEMS}},
        *({**e, "path": f"Observation.{e['path']}"} for e in common),
        {"path": "Observation.value[x]", "min": 1},
    ]  # fmt: skip
    report = [
        {"path": "DiagnosticReport.status", "binding": {"strength": "required", "valueSet": FINAL}},
        {"id": "DiagnosticReport.category:imaging", "path": "DiagnosticReport.category",
         "sliceName": "imaging", "min": 1,
         "patternCodeableConcept": {"coding": [{"system": section, "code": "RAD"}]}},
        {"path": "DiagnosticReport.code", "min": 1,
         "binding": {"strength": "required", "valueSet": IMAGING_ITEMS}},
        *({**e, "path": f"DiagnosticReport.{e['path']}"} for e in common),
        {"path": "DiagnosticReport.conclusion", "min": 1},
    ]  # fmt: skip
    study = [
        {"path": "ImagingStudy.status", "min": 1, "fixedCode": "available"},
        {"path": "ImagingStudy.subject", "min": 1, "type": _reference("Patient")},
        {"path": "ImagingStudy.started", "min": 1},
        {"path": "ImagingStudy.modality", "min": 1},
        {"path": "ImagingStudy.series", "min": 1},
        {"path": "ImagingStudy.series.bodySite", "min": 1},
    ]
    patient = [
        {"id": "Patient.identifier:idNumber", "path": "Patient.identifier",
         "sliceName": "idNumber", "min": 0, "max": "1",
         "patternIdentifier": {"system": ID_NUMBER_SYSTEM}},
        {"id": "Patient.identifier:recordNumber", "path": "Patient.identifier",
         "sliceName": "recordNumber", "min": 0, "max": "1",
         "patternIdentifier": {"system": RECORD_NUMBER_SYSTEM}},
        {"id": "Patient.identifier:healthCard", "path": "Patient.identifier",
         "sliceName": "healthCard", "min": 0, "max": "1",
         "patternIdentifier": {"system": HEALTH_CARD_SYSTEM}},
        {"path": "Patient.name", "min": 1},
        {"path": "Patient.gender", "min": 1},
        {"path": "Patient.birthDate", "min": 1},
    ]  # fmt: skip
    return [
        _structure("resident-patient", "Patient", "A resident's lifelong record", patient),
        _structure("recognized-lab-observation", "Observation",
                   "A laboratory result fit for mutual recognition", lab),
        _structure("recognized-imaging-report", "DiagnosticReport",
                   "An imaging report fit for mutual recognition", report),
        _structure("recognized-imaging-study", "ImagingStudy",
                   "An imaging study fit for mutual recognition", study),
        *master_data(),
        _value_set("final-result-status", "Final result statuses", [
            {"system": "http://hl7.org/fhir/observation-status",
             "concept": [{"code": "final"}, {"code": "amended"}, {"code": "corrected"}]},
        ]),
        _value_set("recognition-laboratory-items", "Laboratory items of the active catalogue", [
            {"system": ITEMS, "filter": [_category("laboratory")]},
        ]),
        _value_set("recognition-imaging-items", "Imaging items of the active catalogue", [
            {"system": ITEMS, "filter": [_category("imaging")]},
        ]),
    ]  # fmt: skip


def main() -> None:
    target = Path(__file__).with_name("profiles")
    target.mkdir(exist_ok=True)
    for resource in build():
        path = target / f"{resource['resourceType']}-{resource['id']}.json"
        path.write_text(json.dumps(resource, ensure_ascii=False, indent=1) + "\n")
        print(path.name)


if __name__ == "__main__":
    main()
