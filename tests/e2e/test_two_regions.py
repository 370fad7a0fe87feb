"""Two regions, two server processes on loopback, each with its own database, data
directory and keys, set up only through the ``ehr-service`` command line:

- they register each other (JWKS by URL, endpoint, a bearer token each issued);
- a result created in Chongqing reaches Sichuan by push, with its Provenance, and
  one created in Sichuan reaches Chongqing by pull;
- messages to Sichuan's endpoint, signed by a partner implemented with
  `cryptography` alone (no JOSE library), are refused when tampered, replayed,
  for another audience, expired, signed with a revoked key or by an unknown
  partner, and each refusal stores nothing;
- after Chongqing rotates its key, new messages are accepted (Sichuan refreshes
  the JWKS) and every stored message still verifies.
"""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from tests.helpers import id_identifier, make_id_number

TYPES = ("Observation", "DiagnosticReport", "ImagingStudy", "Organization")
LAB = [
    {
        "coding": [
            {
                "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                "code": "laboratory",
            }
        ]
    }
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    name: str
    port: int
    data_dir: Path
    process: subprocess.Popen[bytes] | None = None
    staff: str = ""
    extra_env: dict[str, str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EHR_")}
        env.update(
            EHR_ENVIRONMENT="test",
            EHR_DATA_DIR=str(self.data_dir),
            EHR_PORT=str(self.port),
            EHR_EXCHANGE_ID=self.name,
            EHR_EXCHANGE_FEED_SETTLE_SECONDS="0",
            EHR_RECORD_NUMBER_SYSTEM=f"urn:{self.name}:record-number",
            EHR_LOG_LEVEL="WARNING",
        )
        env.update(self.extra_env or {})
        return env

    def cli(self, *args: str, check: bool = True) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "ehr_service.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"{self.name}: {' '.join(args)}: {done.stdout}{done.stderr}")
        return done.stdout + done.stderr

    def start(self) -> None:
        self.cli("migrate")
        with (self.data_dir / "server.log").open("wb") as log:  # the child keeps its copy
            self.process = subprocess.Popen(
                [sys.executable, "-m", "ehr_service.cli", "serve"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/fhir/metadata", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            raise AssertionError((self.data_dir / "server.log").read_text())
        self.staff = self.cli("token", "mint", "--scope", "system/*.cruds ehr/sysadmin").strip()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)

    def fhir(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.staff}", **kwargs.pop("headers", {})}
        return httpx.request(
            method, f"{self.url}/fhir{path}", headers=headers, timeout=30, **kwargs
        )

    def count(self, resource_type: str) -> int:
        total: int = self.fhir("GET", f"/{resource_type}", params={"_summary": "count"}).json()[
            "total"
        ]
        return total


@pytest.fixture(scope="module")
def regions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    root = tmp_path_factory.mktemp("regions")
    chongqing = Server("chongqing", _free_port(), root / "chongqing")
    sichuan = Server("sichuan", _free_port(), root / "sichuan")
    try:
        for server in (chongqing, sichuan):
            server.start()
        for home, partner in ((chongqing, sichuan), (sichuan, chongqing)):
            allow = [arg for t in TYPES for arg in ("--allow", t)]
            home.cli(
                "partner", "add", partner.name, "--name", partner.name.title(),
                "--region", partner.name, "--audience", partner.name,
                "--jwks", f"{partner.url}/.well-known/jwks.json",
                "--endpoint", f"{partner.url}/exchange/v1/bundles", *allow,
            )  # fmt: skip
            scopes = " ".join(f"system/{t}.cu" for t in TYPES)
            token = partner.cli("token", "mint", "--scope", scopes, "--sub", home.name).strip()
            token_file = home.data_dir / f"token-for-{partner.name}.jwt"
            token_file.write_text(token)
            home.cli("partner", "token", partner.name, "--file", str(token_file))
        yield chongqing, sichuan
    finally:
        for server in (chongqing, sichuan):
            server.stop()


def _result(server: Server, number: str, value: float) -> str:
    system = id_identifier(number)["system"]
    found = server.fhir("GET", "/Patient", params={"identifier": f"{system}|{number}"}).json()
    if found["total"]:
        pid = found["entry"][0]["resource"]["id"]
    else:
        patient = {"resourceType": "Patient", "identifier": [id_identifier(number)],
                   "name": [{"family": "陈", "given": ["静"]}], "gender": "female",
                   "birthDate": "1982-02-02"}  # fmt: skip
        pid = server.fhir("POST", "/Patient", json=patient).json()["id"]
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "category": LAB,
        "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
        "subject": {"reference": f"Patient/{pid}"},
        "valueQuantity": {"value": value, "unit": "mmol/L"},
    }
    created = server.fhir("POST", "/Observation", json=observation)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def _values(server: Server, number: str) -> list[float]:
    system = id_identifier(number)["system"]
    found = server.fhir(
        "GET", "/Observation", params={"subject:Patient.identifier": f"{system}|{number}"}
    ).json()
    return sorted(e["resource"]["valueQuantity"]["value"] for e in found.get("entry", []))


# -- a partner signer made with `cryptography` only (no JOSE library) ------------------
def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _private_key(server: Server, kid: str) -> ec.EllipticCurvePrivateKey:
    jwk = orjson.loads((server.data_dir / "keys" / "signing" / f"{kid}.jwk.json").read_bytes())
    number = int.from_bytes(base64.urlsafe_b64decode(jwk["d"] + "=" * (-len(jwk["d"]) % 4)), "big")
    return ec.derive_private_key(number, ec.SECP256R1())


def plain_sign(body: bytes, key: ec.EllipticCurvePrivateKey, kid: str, **header: Any) -> str:
    """RFC 7515 compact, RFC 7797 unencoded detached, ES256: by hand."""
    now = int(time.time())
    protected = {
        "alg": "ES256", "kid": kid, "typ": "ehr-exchange+jws", "b64": False, "crit": ["b64"],
        "iat": now, "exp": now + 300, "jti": str(uuid.uuid4()), "htm": "POST",
    } | header  # fmt: skip
    encoded = _b64(orjson.dumps(protected))
    der = key.sign(encoded.encode() + b"." + body, ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    return f"{encoded}..{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def _message(number: str, value: float) -> bytes:
    return orjson.dumps(
        {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [
                {"resource": {"resourceType": "Patient", "id": "p1",
                              "identifier": [id_identifier(number)]}},
                {"resource": {"resourceType": "Observation", "id": f"o-{value}", "status": "final",
                              "category": LAB, "code": {"text": "glucose"},
                              "subject": {"reference": "Patient/p1"},
                              "valueQuantity": {"value": value, "unit": "mmol/L"}}},
            ],
        }
    )  # fmt: skip


def _active_kid(server: Server) -> str:
    listed = server.cli("keys", "list")
    return next(line.split()[0] for line in listed.splitlines() if line.split()[2] == "active")


def test_two_regions(regions: tuple[Server, Server]) -> None:
    chongqing, sichuan = regions

    # push: Chongqing -> Sichuan, with Provenance on arrival
    number = make_id_number("500103", "19820202", "126")
    _result(chongqing, number, 5.2)
    assert "sent 1," in chongqing.cli("exchange", "push")
    assert "sichuan  sent  1" in chongqing.cli("exchange", "status")
    assert _values(sichuan, number) == [5.2]
    obs = sichuan.fhir("GET", "/Observation").json()["entry"][0]["resource"]
    provenance = sichuan.fhir("GET", "/Provenance", params={"target": f"Observation/{obs['id']}"})
    who = provenance.json()["entry"][0]["resource"]["agent"][0]["who"]["identifier"]["value"]
    assert who == "chongqing"

    # pull: Chongqing reads Sichuan's feed
    other = make_id_number("510104", "19820202", "126")
    _result(sichuan, other, 7.1)
    assert "ingested 1 results" in chongqing.cli("exchange", "pull", "sichuan")
    assert _values(chongqing, other) == [7.1]
    assert "ingested 0 results" in chongqing.cli("exchange", "pull", "sichuan")

    # a partner signing with `cryptography` alone is understood
    endpoint = f"{sichuan.url}/exchange/v1/bundles"
    partner_token = (chongqing.data_dir / "keys" / "partner-tokens" / "sichuan.jwt").read_text()
    kid = _active_kid(chongqing)
    key = _private_key(chongqing, kid)

    def send(body: bytes, signature: str) -> httpx.Response:
        return httpx.post(endpoint, content=body, timeout=30, headers={
            "Authorization": f"Bearer {partner_token}", "Content-Type": "application/fhir+json",
            "X-Exchange-Signature": signature})  # fmt: skip

    fields = {"iss": "chongqing", "aud": "sichuan", "htu": endpoint}
    body = _message(number, 6.3)
    signature = plain_sign(body, key, kid, **fields)
    accepted = send(body, signature)
    assert accepted.status_code == 200, accepted.text
    assert _values(sichuan, number) == [5.2, 6.3]

    def stored() -> tuple[int, int, int]:
        verified = sichuan.cli("exchange", "verify").splitlines()[-1]
        return sichuan.count("Observation"), sichuan.count("Patient"), int(verified.split()[0])

    before = stored()
    # a retry of the same message gets the first answer; a reused jti is refused
    assert send(body, signature).content == accepted.content
    jti = orjson.loads(base64.urlsafe_b64decode(signature.split(".")[0] + "=="))["jti"]
    other_body = _message(number, 6.4)
    assert send(other_body, plain_sign(other_body, key, kid, **fields, jti=jti)).status_code == 409
    tampered = body.replace(b"6.3", b"6.9")
    assert send(tampered, signature).status_code == 403
    wrong_aud = plain_sign(body, key, kid, **(fields | {"aud": "beijing"}))
    assert send(body, wrong_aud).status_code == 403
    old = int(time.time()) - 3600
    expired = plain_sign(body, key, kid, **fields, iat=old, exp=old + 300)
    assert send(body, expired).status_code == 403
    stranger = ec.generate_private_key(ec.SECP256R1())
    assert (
        send(body, plain_sign(body, stranger, "k1", **(fields | {"iss": "beijing"}))).status_code
        == 403
    )
    # a key Sichuan knew, then revoked by Chongqing: refused once Sichuan refreshes
    spare = chongqing.cli("keys", "generate").split()[0]  # pending: published, may sign
    sichuan.cli("partner", "update", "chongqing")
    chongqing.cli("keys", "revoke", spare)
    sichuan.cli("partner", "update", "chongqing")
    assert f"{spare}:revoked" in sichuan.cli("partner", "list")
    revoked = plain_sign(body, _private_key(chongqing, spare), spare, **fields)
    assert send(body, revoked).status_code == 403
    assert stored() == before  # none of the refusals stored anything

    # rotation: Chongqing's next key signs; Sichuan fetches it; old messages still verify
    chongqing.cli("keys", "rotate")
    assert _active_kid(chongqing) != kid
    _result(chongqing, number, 5.9)
    assert "sent 1," in chongqing.cli("exchange", "push")
    assert _values(sichuan, number) == [5.2, 5.9, 6.3]
    report = sichuan.cli("exchange", "verify")
    assert report.splitlines()[-1].endswith(" 0 failed"), report
    assert "0 failed" in chongqing.cli("exchange", "verify")
    # a message signed with the retired key is no longer accepted
    late = _message(number, 8.8)
    assert send(late, plain_sign(late, key, kid, **fields)).status_code == 403
