"""Hostile input: forged tokens, other patients' data through every path, writes
outside the compartment, mass assignment, exhaustion and SQL metacharacters.
Each case asserts the status, that nothing leaked and that nothing was stored."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import types
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import ECKey

from ehr_service.app import create_app
from ehr_service.interactions.context import Services
from ehr_service.security import tokens as tokens_module
from ehr_service.security.tokens import own_key
from tests.helpers import FHIR_JSON, TERMINOLOGY_TYPES, bearer, observation, patient, snapshot


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(services: Services, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": services.settings.own_token_issuer,
        "aud": services.settings.token_audience,
        "sub": "mallory",
        "iat": now,
        "exp": now + 300,
        "scope": "system/*.cruds",
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _signed(services: Services, header: dict[str, Any] | None = None, **changes: Any) -> str:
    key = own_key(services.settings)
    return jwt.encode(
        {"alg": "ES256", "kid": key.kid, **(header or {})}, _claims(services, **changes), key
    )


def _forged_hs256(services: Services) -> str:
    """The classic confusion: HMAC keyed with the server's public key."""
    public = orjson.dumps(own_key(services.settings).as_dict(private=False))
    head = _b64(orjson.dumps({"alg": "HS256", "kid": own_key(services.settings).kid}))
    body = _b64(orjson.dumps(_claims(services)))
    signature = hmac.new(public, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(signature)}"


def _alg_none(services: Services) -> str:
    head = _b64(orjson.dumps({"alg": "none", "typ": "JWT"}))
    return f"{head}.{_b64(orjson.dumps(_claims(services)))}."


def _other_key(services: Services, kid: str | None = None) -> str:
    key = ECKey.generate_key("P-256", private=True)
    kid = kid or own_key(services.settings).kid  # claims to be ours
    return jwt.encode({"alg": "ES256", "kid": kid}, _claims(services), key)


def _embedded_jwk(services: Services) -> str:
    key = ECKey.generate_key("P-256", private=True, auto_kid=True)
    header = {"alg": "ES256", "kid": key.kid, "jwk": key.as_dict(private=False)}
    return jwt.encode(header, _claims(services), key)


def _tampered(services: Services) -> str:
    head, body, signature = _signed(services, scope="patient/*.rs", patient="x").split(".")
    claims = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims.pop("patient")
    claims["scope"] = "system/*.cruds"
    return f"{head}.{_b64(orjson.dumps(claims))}.{signature}"


FORGED: dict[str, Callable[[Services], str]] = {
    "garbage": lambda s: "not.a.token",
    "expired": lambda s: _signed(s, exp=int(time.time()) - 3600, iat=int(time.time()) - 7200),
    "issued in the future": lambda s: _signed(s, iat=int(time.time()) + 3600),
    "no exp": lambda s: _signed(s, exp=None),
    "no iat": lambda s: _signed(s, iat=None),
    "no iss": lambda s: _signed(s, iss=None),
    "no aud": lambda s: _signed(s, aud=None),
    "wrong aud": lambda s: _signed(s, aud="another-service"),
    "unknown iss": lambda s: _signed(s, iss="https://attacker.example"),
    "alg none": _alg_none,
    "HMAC with the public key": _forged_hs256,
    "another key with our kid": _other_key,
    "kid path traversal": lambda s: _other_key(s, "../../../../etc/passwd"),
    "kid SQL": lambda s: _other_key(s, "' OR '1'='1'; DROP TABLE resource; --"),
    "embedded jwk": _embedded_jwk,
    "tampered payload": _tampered,
    "oversized": lambda s: "a" * 20_000,
    "patient scope without patient": lambda s: _signed(s, scope="patient/*.rs"),
}


@pytest.mark.parametrize("case", sorted(FORGED))
def test_forged_tokens_are_401_and_store_nothing(
    client: TestClient, services: Services, case: str
) -> None:
    before = snapshot(services)
    token = FORGED[case](services)
    headers = {"Authorization": f"Bearer {token}", **FHIR_JSON}
    read = client.get("/fhir/Patient", headers=headers)
    assert read.status_code == 401, (case, read.text)
    assert read.headers["WWW-Authenticate"].startswith("Bearer")
    assert read.json()["resourceType"] == "OperationOutcome"
    written = client.post("/fhir/Patient", json=patient(), headers=headers)
    assert written.status_code == 401
    assert snapshot(services) == before


def test_no_token_is_401_but_discovery_is_open(services: Services) -> None:
    with TestClient(create_app(services=services), raise_server_exceptions=False) as anonymous:
        for path in ("/fhir/Patient", "/fhir/Patient/x", "/fhir/_history"):
            response = anonymous.get(path)
            assert response.status_code == 401
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert anonymous.post("/fhir", content=b"{not json", headers=FHIR_JSON).status_code == 401
        assert anonymous.get("/fhir/metadata").status_code == 200
        for path in ("/.well-known/smart-configuration", "/fhir/.well-known/smart-configuration"):
            config = anonymous.get(path).json()
            assert "permission-v2" in config["capabilities"]
        wrong_scheme = anonymous.get("/fhir/Patient", headers={"Authorization": "Basic YTpi"})
        assert wrong_scheme.status_code == 401


# -- a patient-bound token sees its own record only ---------------------------------


@pytest.fixture
def two_residents(client: TestClient) -> dict[str, Any]:
    ids: dict[str, Any] = {}
    for key, name in (("mine", "王芳"), ("theirs", "李建国")):
        created = client.post(
            "/fhir/Patient", json=patient(name=[{"text": name}]), headers=FHIR_JSON
        ).json()
        ids[key] = created["id"]
        obs = client.post(
            "/fhir/Observation", json=observation(f"Patient/{created['id']}"), headers=FHIR_JSON
        )
        ids[f"{key}_obs"] = obs.json()["id"]
    org = client.post(
        "/fhir/Organization", json={"resourceType": "Organization", "name": "西南医院"}
    )
    ids["org"] = org.json()["id"]
    return ids


def _citizen(services: Services, patient_id: str, scopes: str = "patient/*.cruds") -> TestClient:
    return TestClient(
        create_app(services=services),
        raise_server_exceptions=False,
        headers=bearer(services.settings, scopes, patient=patient_id, subject="citizen"),
    )


def _ids(bundle: dict[str, Any]) -> set[str]:
    return {e["resource"]["id"] for e in bundle.get("entry", []) if "resource" in e}


def test_patient_token_reads_only_its_compartment(
    services: Services, two_residents: dict[str, Any]
) -> None:
    ids = two_residents
    mine, theirs = ids["mine"], ids["theirs"]
    with _citizen(services, mine) as me:
        assert me.get(f"/fhir/Patient/{mine}").status_code == 200
        assert me.get(f"/fhir/Patient/{theirs}").status_code == 404
        assert me.get(f"/fhir/Observation/{ids['theirs_obs']}").status_code == 404
        assert me.get(f"/fhir/Observation/{ids['theirs_obs']}/_history/1").status_code == 404
        assert me.get(f"/fhir/Observation/{ids['theirs_obs']}/_history").status_code == 404
        assert me.get(f"/fhir/Organization/{ids['org']}").status_code == 200  # shared data
        published = {  # the catalogue's terminology: shared, outside every record
            e["resource"]["id"]
            for t in TERMINOLOGY_TYPES
            for e in me.get(f"/fhir/{t}").json().get("entry", [])
        }
        searches = {
            "/fhir/Observation": {ids["mine_obs"]},
            "/fhir/Patient": {mine},
            "/fhir/Observation?_include=Observation:subject": {ids["mine_obs"], mine},
            "/fhir/Patient?_revinclude=Observation:subject": {mine, ids["mine_obs"]},
            "/fhir/Observation?subject:Patient.name=李建国": set(),
            f"/fhir/Observation?subject=Patient/{theirs}": set(),
            "/fhir/Patient?_has:Observation:patient:code=2345-7": {mine},
            "/fhir/Observation/_history": {ids["mine_obs"]},
            "/fhir/_history": {mine, ids["mine_obs"], ids["org"], *published},
        }
        for url, expected in searches.items():
            bundle = me.get(url).json()
            assert _ids(bundle) == expected, url
            if "total" in bundle and "_history" not in url:
                assert bundle["total"] == len(expected - {ids["org"]}) or "include" in url, url
        assert me.get(f"/fhir/Patient/{theirs}/$everything").status_code == 404
        everything = me.get(f"/fhir/Patient/{mine}/$everything").json()
        assert theirs not in str(everything) and ids["theirs_obs"] not in str(everything)
        assert me.get("/fhir/Patient/$everything").status_code == 403
        batch = me.post(
            "/fhir",
            json={
                "resourceType": "Bundle",
                "type": "batch",
                "entry": [
                    {"request": {"method": "GET", "url": f"Patient/{theirs}"}},
                    {"request": {"method": "GET", "url": f"Observation?subject={theirs}"}},
                    {"request": {"method": "GET", "url": f"Patient/{mine}"}},
                ],
            },
            headers=FHIR_JSON,
        ).json()
        statuses = [e["response"]["status"] for e in batch["entry"]]
        assert statuses == ["404 Not Found", "200 OK", "200 OK"]
        assert "entry" not in batch["entry"][1]["resource"]
        match = {
            "resourceType": "Parameters",
            "parameter": [{"name": "resource", "resource": patient()}],
        }
        assert me.post("/fhir/Patient/$match", json=match, headers=FHIR_JSON).status_code == 403
        assert me.get("/fhir/Patient/$ihe-pix?sourceIdentifier=a|b").status_code == 403


def test_patient_token_cannot_write_outside_its_record(
    services: Services, two_residents: dict[str, Any], client: TestClient
) -> None:
    ids = two_residents
    mine, theirs = ids["mine"], ids["theirs"]
    before = snapshot(services)
    with _citizen(services, mine) as me:
        attempts = [
            me.post("/fhir/Observation", json=observation(f"Patient/{theirs}"), headers=FHIR_JSON),
            me.post("/fhir/Organization", json={"resourceType": "Organization", "name": "x"}),
            me.put(
                f"/fhir/Observation/{ids['mine_obs']}",
                json={**observation(f"Patient/{theirs}"), "id": ids["mine_obs"]},
                headers=FHIR_JSON,
            ),
            me.put(
                f"/fhir/Observation/{ids['theirs_obs']}",
                json={**observation(f"Patient/{mine}"), "id": ids["theirs_obs"]},
                headers=FHIR_JSON,
            ),
            me.patch(
                f"/fhir/Observation/{ids['mine_obs']}",
                json=[
                    {"op": "replace", "path": "/subject/reference", "value": f"Patient/{theirs}"}
                ],
                headers={"Content-Type": "application/json-patch+json"},
            ),
            me.delete(f"/fhir/Observation/{ids['theirs_obs']}"),
            me.put(
                f"/fhir/Observation?subject={theirs}",
                json=observation(f"Patient/{theirs}"),
                headers=FHIR_JSON,
            ),
            me.post(
                "/fhir",
                json={
                    "resourceType": "Bundle",
                    "type": "transaction",
                    "entry": [
                        {
                            "resource": observation(f"Patient/{mine}"),
                            "request": {"method": "POST", "url": "Observation"},
                        },
                        {
                            "resource": observation(f"Patient/{theirs}"),
                            "request": {"method": "POST", "url": "Observation"},
                        },
                    ],
                },
                headers=FHIR_JSON,
            ),
        ]
        merge = {
            "resourceType": "Parameters",
            "parameter": [
                {"name": "source-patient", "valueReference": {"reference": f"Patient/{theirs}"}},
                {"name": "target-patient", "valueReference": {"reference": f"Patient/{mine}"}},
            ],
        }
        attempts.append(me.post("/fhir/Patient/$merge", json=merge, headers=FHIR_JSON))
    statuses = [r.status_code for r in attempts]
    assert all(s in {403, 404} for s in statuses), statuses
    assert statuses.count(403) >= 6, statuses
    assert snapshot(services) == before
    # and its own record it may write
    with _citizen(services, mine) as me:
        own = me.post("/fhir/Observation", json=observation(f"Patient/{mine}"), headers=FHIR_JSON)
        assert own.status_code == 201


def test_scopes_limit_types_and_actions(services: Services, two_residents: dict[str, Any]) -> None:
    ids = two_residents
    readers = TestClient(
        create_app(services=services),
        raise_server_exceptions=False,
        headers=bearer(services.settings, "user/Observation.rs user/Patient.read"),
    )
    with readers:
        assert readers.get(f"/fhir/Observation/{ids['theirs_obs']}").status_code == 200
        assert readers.get(f"/fhir/Organization/{ids['org']}").status_code == 403
        assert readers.post("/fhir/Patient", json=patient(), headers=FHIR_JSON).status_code == 403
        assert readers.delete(f"/fhir/Observation/{ids['mine_obs']}").status_code == 403
        everything = readers.get(f"/fhir/Patient/{ids['mine']}/$everything").json()
        assert {e["resource"]["resourceType"] for e in everything["entry"]} <= {
            "Observation",
            "Patient",
        }
        merge = {"resourceType": "Parameters", "parameter": []}
        assert (
            readers.post("/fhir/Patient/$merge", json=merge, headers=FHIR_JSON).status_code == 403
        )
    # v2 letters out of order or with a query grant nothing (fail closed)
    odd = bearer(services.settings, "user/Observation.sr user/Patient.rs?active=true")
    with TestClient(create_app(services=services), raise_server_exceptions=False, headers=odd) as c:
        assert c.get("/fhir/Observation").status_code == 403
        assert c.get("/fhir/Patient").status_code == 403


# -- mass assignment, exhaustion, metacharacters -------------------------------------


def test_mass_assignment_of_id_and_meta_is_ignored(client: TestClient) -> None:
    sent = patient(id="chosen", meta={"versionId": "99", "lastUpdated": "1999-01-01T00:00:00Z"})
    created = client.post("/fhir/Patient", json=sent, headers=FHIR_JSON).json()
    assert created["id"] != "chosen" and created["meta"]["versionId"] == "1"
    assert created["meta"]["lastUpdated"] != "1999-01-01T00:00:00Z"
    assert client.get("/fhir/Patient/chosen").status_code == 404


def test_exhaustion_limits(client: TestClient, services: Services) -> None:
    big = client.get("/fhir/Patient?_count=100000").json()
    assert f"_count={services.settings.max_page_size}" in big["link"][0]["url"]
    iterate = client.get("/fhir/Observation?_include:iterate=*&_revinclude:iterate=*")
    assert iterate.status_code in {200, 400}
    before = snapshot(services)
    huge = b'{"resourceType":"Patient","name":[{"text":"' + b"x" * (17 * 1024 * 1024) + b'"}]}'
    assert client.post("/fhir/Patient", content=huge, headers=FHIR_JSON).status_code == 413
    deep = b'{"resourceType":"Patient","extension":' + b"[" * 5000 + b"]" * 5000 + b"}"
    assert client.post("/fhir/Patient", content=deep, headers=FHIR_JSON).status_code == 400
    assert snapshot(services) == before


METACHARACTERS = ["' OR '1'='1", "1; DROP TABLE resource; --", "%' --", '"\\', "\x00", "ge'"]
PARAMETERS = [
    "name",  # string
    "gender",  # token
    "birthdate",  # date
    "general-practitioner",  # reference
    "identifier",  # token (identifier)
    "_id",
    "_lastUpdated",
]


@pytest.mark.parametrize("value", METACHARACTERS)
def test_sql_metacharacters_in_every_parameter_kind(
    client: TestClient, services: Services, two_residents: dict[str, Any], value: str
) -> None:
    before = snapshot(services)
    for name in PARAMETERS:
        response = client.get("/fhir/Patient", params={name: value})
        assert response.status_code in {200, 400}, (name, response.text)
        if response.status_code == 200:
            assert "entry" not in response.json(), name
    for path in (
        "/fhir/Observation",
        "/fhir/Observation?value-quantity=",
        "/fhir/Observation?code-value-quantity=",
        "/fhir/ValueSet?url=",
        "/fhir/RiskAssessment?probability=",
    ):
        response = client.get(path + quote(value) if path.endswith("=") else path)
        assert response.status_code in {200, 400}, path
    assert snapshot(services) == before


def test_control_characters_in_content_are_400(client: TestClient, services: Services) -> None:
    before = snapshot(services)
    for text in ("a\x00b", "bell\x07"):
        response = client.post(
            "/fhir/Patient", json=patient(name=[{"text": text}]), headers=FHIR_JSON
        )
        assert response.status_code == 400
        assert response.json()["issue"][0]["expression"] == ["Patient.name[0].text"]
    assert snapshot(services) == before


def test_external_issuer_keys_from_a_jwks_file(
    make_client: Callable[..., TestClient], tmp_path: Any
) -> None:
    from joserfc.jwk import OKPKey, RSAKey

    keys = [
        ECKey.generate_key("P-256", private=True, auto_kid=True),
        RSAKey.generate_key(2048, private=True, auto_kid=True),
        OKPKey.generate_key("Ed25519", private=True, auto_kid=True),
    ]
    jwks = tmp_path / "jwks.json"
    jwks.write_bytes(orjson.dumps({"keys": [k.as_dict(private=False) for k in keys]}))
    client = make_client(
        environment="production",
        jwks_file=jwks,
        token_issuers=["https://idp.cq.example"],
        token_audience="ehr-cq",
    )
    now = int(time.time())
    claims = {
        "iss": "https://idp.cq.example",
        "aud": ["ehr-cq", "other"],
        "sub": "his-1",
        "iat": now,
        "exp": now + 60,
        "scope": "system/Patient.rs",
    }
    for key, alg in zip(keys, ("ES256", "RS256", "Ed25519"), strict=True):
        token = jwt.encode({"alg": alg, "kid": key.kid}, claims, key, algorithms=[alg])
        response = client.get("/fhir/Patient", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200, (alg, response.text)
    # in production the service's own development tokens are not trusted
    services = client.app.state.services
    own = _signed(services, aud="ehr-cq")
    assert (
        client.get("/fhir/Patient", headers={"Authorization": f"Bearer {own}"}).status_code == 401
    )


def test_security_review_regressions(
    client: TestClient, services: Services, two_residents: dict[str, Any]
) -> None:
    ids = two_residents
    mine, theirs = ids["mine"], ids["theirs"]
    client.put(
        f"/fhir/Patient/{theirs}",
        json=patient(id=theirs, name=[{"family": "Bobsecret"}]),
        headers=FHIR_JSON,
    )
    with _citizen(services, mine) as me:
        # chains and _has see only what the token may search directly
        assert (
            _ids(me.get(f"/fhir/Patient?_has:Observation:subject:subject=Patient/{theirs}").json())
            == set()
        )
        assert _ids(me.get("/fhir/Observation?subject:Patient.family=Bobsecret").json()) == set()
        # a resource of mine that points into their record: refused
        sneaky = observation(f"Patient/{mine}")
        sneaky["performer"] = [{"reference": f"Patient/{theirs}"}]
        assert me.post("/fhir/Observation", json=sneaky, headers=FHIR_JSON).status_code == 403
        absolute = observation(f"http://testserver/fhir/Patient/{theirs}")
        absolute["performer"] = [{"reference": f"Patient/{mine}"}]
        assert me.post("/fhir/Observation", json=absolute, headers=FHIR_JSON).status_code == 403
    # an administrator role on a patient-bound token: minting refuses it, the verifier too
    admin_patient = _signed(services, scope="patient/*.rs ehr/admin", patient=mine)
    with TestClient(
        create_app(services=services),
        raise_server_exceptions=False,
        headers={"Authorization": f"Bearer {admin_patient}"},
    ) as c:
        refused = c.get("/fhir/Patient/$everything")
        assert refused.status_code == 403
        assert "patient-bound" in refused.json()["issue"][0]["diagnostics"]
    only_orgs = bearer(services.settings, "user/Organization.rs")
    with TestClient(
        create_app(services=services), raise_server_exceptions=False, headers=only_orgs
    ) as c:
        probe = c.get(f"/fhir/Organization?_has:Observation:performer:subject=Patient/{theirs}")
        assert probe.status_code == 403
    # odd versions and claims are 4xx, never 500
    assert client.get(f"/fhir/Patient/{mine}/_history/99999999999999999999").status_code == 404
    assert client.get(f"/fhir/Patient/{mine}/_history/%C2%B2").status_code == 404
    listed_iss = _signed(services, iss=["a", "b"])
    assert (
        client.get("/fhir/Patient", headers={"Authorization": f"Bearer {listed_iss}"}).status_code
        == 401
    )
    boolean_exp = _signed(services, exp=True)
    assert (
        client.get("/fhir/Patient", headers={"Authorization": f"Bearer {boolean_exp}"}).status_code
        == 401
    )


def test_refused_organisation_cannot_write_the_record(
    client: TestClient, services: Services, two_residents: dict[str, Any]
) -> None:
    theirs = two_residents["theirs"]
    consent = {
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
        "patient": {"reference": f"Patient/{theirs}"},
        "provision": {
            "type": "deny",
            "actor": [
                {"role": {"text": "recipient"}, "reference": {"reference": "Organization/x"}}
            ],
        },
    }
    consent_id = client.post("/fhir/Consent", json=consent, headers=FHIR_JSON).json()["id"]
    before = snapshot(services)
    refused = bearer(services.settings, "user/*.cruds", organization="Organization/x")
    with TestClient(
        create_app(services=services), raise_server_exceptions=False, headers=refused
    ) as x:
        assert x.delete(f"/fhir/Consent/{consent_id}").status_code == 403
        assert (
            x.put(f"/fhir/Patient/{theirs}", json=patient(id=theirs), headers=FHIR_JSON).status_code
            == 403
        )
        versioned = {**FHIR_JSON, "If-Match": 'W/"99"'}
        assert (
            x.put(f"/fhir/Patient/{theirs}", json=patient(id=theirs), headers=versioned).status_code
            == 403
        )
        match = {
            "resourceType": "Parameters",
            "parameter": [{"name": "resource", "resource": patient(name=[{"text": "李建国"}])}],
        }
        found = x.post("/fhir/Patient/$match", json=match, headers=FHIR_JSON).json()
        assert theirs not in str(found)
    assert snapshot(services) == before


def test_login_failure_floods_are_throttled_not_audited(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(rate_limit_per_minute=60, rate_limit_burst=5)
    statuses = [
        client.get("/fhir/Patient", headers={"Authorization": "Bearer x.y.z"}).status_code
        for _ in range(8)
    ]
    assert statuses[:5] == [401] * 5 and statuses[5:] == [429] * 3


def test_shared_types_that_point_at_another_resident_are_hidden(
    client: TestClient, services: Services, two_residents: dict[str, Any]
) -> None:
    ids = two_residents
    devices = {}
    for key in ("mine", "theirs"):
        device = {"resourceType": "Device", "patient": {"reference": f"Patient/{ids[key]}"}}
        devices[key] = client.post("/fhir/Device", json=device, headers=FHIR_JSON).json()["id"]
    with _citizen(services, ids["mine"]) as me:
        assert me.get(f"/fhir/Device/{devices['theirs']}").status_code == 404
        assert me.get(f"/fhir/Device/{devices['theirs']}/_history/1").status_code == 404
        assert me.get(f"/fhir/Device/{devices['mine']}").status_code == 200
        assert _ids(me.get("/fhir/Device").json()) == {devices["mine"]}
        assert _ids(me.get(f"/fhir/Device?patient={ids['theirs']}").json()) == set()
        assert _ids(me.get("/fhir/Organization").json()) == {ids["org"]}


def test_a_verified_token_is_remembered_until_it_expires(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A token seen before is not verified again (its digest is looked up), until
    it expires; a token that failed is never remembered."""
    verifier = services.tokens
    calls: list[str] = []
    verify = verifier._verify
    monkeypatch.setattr(verifier, "_verify", lambda t: calls.append(t) or verify(t))
    token = _signed(services, exp=int(time.time()) + 2)
    app = create_app(services=services)
    with TestClient(app, raise_server_exceptions=False) as client:
        headers = {"Authorization": f"Bearer {token}"}
        assert [client.get("/fhir/Patient", headers=headers).status_code for _ in range(3)] == [
            200
        ] * 3
        assert calls == [token]  # verified once
        forged = _tampered(services)
        for _ in range(2):
            assert client.get("/fhir/Patient", headers={"Authorization": f"Bearer {forged}"}
                              ).status_code == 401  # fmt: skip
        assert calls.count(forged) == 2  # refused each time, never remembered
        skew = services.settings.token_clock_skew_seconds
        later = token_expiry(token) + skew + 1
        clock = types.SimpleNamespace(time=lambda: float(later), monotonic=time.monotonic)
        monkeypatch.setattr(tokens_module, "time", clock)
        assert client.get("/fhir/Patient", headers=headers).status_code == 401  # expired now
        assert calls.count(token) == 2


def token_expiry(token: str) -> int:
    body = token.split(".")[1]
    return int(orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))["exp"])


def test_smart_configuration_claims_only_what_is_configured(make_services: Any) -> None:
    bare = make_services()
    with TestClient(create_app(services=bare)) as anonymous:
        config = anonymous.get("/.well-known/smart-configuration").json()
    assert "context-standalone-patient" not in config["capabilities"]
    assert "token_endpoint" not in config and "code_challenge_methods_supported" not in config
    full = make_services(
        token_endpoint="https://auth.example/token",
        authorization_endpoint="https://auth.example/authorize",
    )
    with TestClient(create_app(services=full)) as anonymous:
        config = anonymous.get("/fhir/.well-known/smart-configuration").json()
    assert config["token_endpoint"] == "https://auth.example/token"
    assert config["authorization_endpoint"] == "https://auth.example/authorize"
    assert {"launch-standalone", "context-standalone-patient",
            "client-confidential-asymmetric"} <= set(config["capabilities"])  # fmt: skip
    assert {"ES384", "RS384"} <= set(config["token_endpoint_auth_signing_alg_values_supported"])
    assert config["grant_types_supported"] == ["client_credentials", "authorization_code"]
    assert config["code_challenge_methods_supported"] == ["S256"]
