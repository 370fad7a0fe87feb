"""Small helpers shared by the API tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from ehr_service.interactions.context import Services
from ehr_service.recognition.institutions import REGION_URL, quality_control_extension
from ehr_service.storage.tables import resource, resource_version

FHIR_JSON = {"Content-Type": "application/fhir+json"}


def patient(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Patient",
        "name": [{"family": "王", "given": ["芳"]}],
        "gender": "female",
        "birthDate": "1968-03-14",
    }
    body.update(fields)
    return body


def observation(patient_ref: str, value: float = 5.8) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
        "subject": {"reference": patient_ref},
        "valueQuantity": {"value": value, "unit": "mmol/L"},
    }


def snapshot(services: Services) -> tuple[list[Any], list[Any]]:
    """Every stored row, to prove a failed request changed nothing."""
    with services.unit.read() as conn:
        current = conn.execute(
            sa.select(resource).order_by(resource.c.res_type, resource.c.res_id)
        ).all()
        versions = conn.execute(sa.select(resource_version).order_by(resource_version.c.seq)).all()
    return [tuple(r) for r in current], [tuple(r) for r in versions]


def issue_expressions(outcome: dict[str, Any]) -> list[str]:
    return [e for issue in outcome["issue"] for e in issue.get("expression", [])]


# The check-character weights of GB 11643 as printed in the standard, so tests do not
# lean on the code under test to make their numbers.
GB11643_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
ID_SYSTEM = "urn:oid:2.16.156.10011.1.3"


def make_id_number(area: str = "500101", born: str = "19900307", sequence: str = "123") -> str:
    """A valid 18-character resident ID number (odd last sequence digit: male)."""
    first17 = area + born + sequence
    total = sum(int(d) * w for d, w in zip(first17, GB11643_WEIGHTS, strict=True))
    return first17 + "10X98765432"[total % 11]


def id_identifier(number: str) -> dict[str, Any]:
    return {"system": ID_SYSTEM, "value": number}


STAFF_SCOPES = "system/*.cruds ehr/admin"  # the deprecated name: system administration


def bearer(settings: Any, scopes: str = STAFF_SCOPES, **claims: Any) -> dict[str, str]:
    """An Authorization header with a token the service's own key signs (test settings
    trust it): by default a system client with every right."""
    from ehr_service.security.tokens import TokenClaims, mint

    token = mint(
        settings, TokenClaims(subject=claims.pop("subject", "test-system"), scopes=scopes, **claims)
    )
    return {"Authorization": f"Bearer {token}"}


LAB_CATEGORY = [
    {
        "coding": [
            {
                "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                "code": "laboratory",
            }
        ]
    }
]


def organization(
    org_id: str, *, passed: bool = True, category: str = "lab-chemistry"
) -> dict[str, Any]:
    return {
        "resourceType": "Organization",
        "id": org_id,
        "name": f"医院 {org_id}",
        "extension": [
            {"url": REGION_URL, "valueCode": "chongqing"},
            quality_control_extension(
                category, "NCCL EQA", "2026-1", passed, "2026-01-01", "2026-06-30"
            ),
        ],
    }


def lab(
    pid: str, loinc: str, day: str, org: str, status: str = "final", value: float = 5.0
) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": status,
        "category": LAB_CATEGORY,
        "code": {"coding": [{"system": "http://loinc.org", "code": loinc}]},
        "subject": {"reference": f"Patient/{pid}"},
        "performer": [{"reference": f"Organization/{org}"}],
        "effectiveDateTime": f"{day}T09:00:00+08:00",
        "valueQuantity": {"value": value, "unit": "mmol/L"},
    }


def parameters(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": list(parts)}


def refusal(
    patient_id: str, *, region: str | None = None, organization: str | None = None
) -> dict[str, Any]:
    """A Consent by which the resident refuses a region or an organisation."""
    if region is not None:
        actor = {
            "role": {"text": "region"},
            "reference": {"identifier": {"system": "urn:ehr-service:region", "value": region}},
        }
    else:
        actor = {"role": {"text": "organization"}, "reference": {"reference": organization}}
    return {
        "resourceType": "Consent",
        "status": "active",
        "scope": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                    "code": "patient-privacy",
                }
            ]
        },
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{patient_id}"},
        "provision": {"type": "deny", "actor": [actor]},
    }


# The recognition catalogue's terminology, published at every first start:
# CodeSystem, ConceptMap and three ValueSets (ehr_service.interactions.terminology).
TERMINOLOGY_TYPES = frozenset({"CodeSystem", "ConceptMap", "ValueSet"})
PUBLISHED_AT_START = 5


def shipped_edition() -> dict[str, Any]:
    """The shipped recognition catalogue edition (a Bundle of CodeSystem and
    ConceptMap), parsed afresh for a test to change."""
    import orjson

    from ehr_service.config import PROJECT_ROOT

    path = PROJECT_ROOT / "fhir_profiles/recognition/catalogue-2024.json"
    document: dict[str, Any] = orjson.loads(path.read_bytes())
    return document


@contextmanager
def tamper(services: Services) -> Iterator[sa.Connection]:
    """A write as an owner of the schema could make it: the database's audit guard
    dropped for it (and put back at its end), so that what ``audit verify`` finds
    is tested, not what the guard refuses."""
    from ehr_service.storage import audit_guard

    with services.unit.write(audited=False) as conn:
        audit_guard.drop(conn)
        yield conn
        audit_guard.install(conn)


def seal_and_verify(services: Any, signatures: bool | None = None) -> Any:
    """Seal what is committed (as a server's sealer would) with the services' own
    signing key, then verify the chain; signatures too, by default on SQLite (a
    database per test: on the PostgreSQL database every test shares, each test's
    blocks are signed by that test's key)."""
    from ehr_service.audit.chain import verify
    from ehr_service.audit.sealing import Sealer
    from ehr_service.exchange.keys import SigningKeys

    keys = SigningKeys(services.settings.signing_keys_dir)
    keys.ensure_active()
    seal_all(Sealer(services.unit, keys, interval=0))
    if signatures is None:
        signatures = not services.database.is_postgresql
    return verify(services.unit, keys if signatures else None)


def seal_all(sealer: Any, seconds: float = 30.0) -> None:
    """Seal until nothing committed is left: on PostgreSQL a transaction open
    anywhere in the cluster (another test worker's) holds sealing back a moment."""
    import time

    from ehr_service.storage import audit as audit_store

    deadline = time.monotonic() + seconds
    while True:
        sealer.seal()
        with sealer.unit.read() as conn:
            if audit_store.count_unsealed(conn) == 0 or time.monotonic() > deadline:
                return
        time.sleep(0.05)


AUDITOR_SCOPES = "ehr/auditadmin"  # the audit administrator: the trail and nothing else


def audit_get(client: Any, path: str) -> Any:
    """GET on the audit trail as the audit administrator (the system administrator
    of ``STAFF_SCOPES`` may not read it)."""
    settings = client.app.state.services.settings
    return client.get(path, headers=bearer(settings, AUDITOR_SCOPES))
