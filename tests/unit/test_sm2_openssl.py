"""SM2SM3 envelopes interoperate with OpenSSL 3 (an independent SM2 implementation):
what the service signs verifies with ``openssl pkeyutl``, and what ``openssl`` signs
verifies in the service, both over the JWS Signing Input with the default
distinguishing identifier. Skipped where ``openssl`` lacks SM2."""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from ehr_service.exchange.envelope import Envelope, EnvelopeError, sign, verify
from ehr_service.fhir import jsonio
from ehr_service.security.sm2 import DEFAULT_ID, SM2Key

OPENSSL = shutil.which("openssl")
# SubjectPublicKeyInfo of an SM2 key: id-ecPublicKey with the SM2 curve OID, then 04 || x || y
SPKI_PREFIX = bytes.fromhex("3059301306072a8648ce3d020106082a811ccf5501822d03420004")
URL = "https://ehr.sc.example/exchange/v1/bundles"
BODY = b'{"resourceType":"Bundle","type":"collection","entry":[{"fullUrl":"urn:x"}]}'
NOW = 1_800_000_000


def _openssl(*args: str, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    assert OPENSSL is not None
    return subprocess.run([OPENSSL, *args], cwd=cwd, capture_output=True, timeout=30, check=False)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    if OPENSSL is None:
        pytest.skip("openssl is not installed: the SM2 interoperability tests need it")
    made = _openssl("genpkey", "-algorithm", "SM2", "-out", "key.pem", cwd=tmp_path)
    digests = _openssl("list", "-digest-algorithms", cwd=tmp_path).stdout
    if made.returncode != 0 or b"SM3" not in digests:
        pytest.skip("this openssl has no SM2/SM3: the interoperability tests need them")
    return tmp_path


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _service_signed(key: SM2Key) -> str:
    return sign(BODY, key, kid=key.thumbprint(), alg="SM2SM3", iss="chongqing", aud="sichuan",
                htm="POST", htu=URL, now=NOW)  # fmt: skip


def test_openssl_verifies_what_the_service_signs(workdir: Path) -> None:
    key = SM2Key.generate()
    header, _, signature = _service_signed(key).split(".")
    (workdir / "pub.der").write_bytes(SPKI_PREFIX + key.public_bytes)
    (workdir / "input").write_bytes(header.encode() + b"." + BODY)  # RFC 7797 signing input
    raw = _unb64(signature)
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    (workdir / "sig.der").write_bytes(der)
    common = ["-pubin", "-inkey", "pub.der", "-keyform", "DER", "-rawin", "-digest", "sm3"]
    checked = _openssl("pkeyutl", "-verify", *common, "-pkeyopt",
                       f"distid:{DEFAULT_ID.decode()}", "-in", "input", "-sigfile", "sig.der",
                       cwd=workdir)  # fmt: skip
    assert checked.returncode == 0 and b"Verified Successfully" in checked.stdout, checked
    # and openssl refuses it over other bytes, or under another identifier
    (workdir / "input").write_bytes(header.encode() + b"." + BODY + b" ")
    tampered = _openssl("pkeyutl", "-verify", *common, "-pkeyopt",
                        f"distid:{DEFAULT_ID.decode()}", "-in", "input", "-sigfile", "sig.der",
                        cwd=workdir)  # fmt: skip
    assert tampered.returncode != 0
    (workdir / "input").write_bytes(header.encode() + b"." + BODY)
    other = _openssl("pkeyutl", "-verify", *common, "-pkeyopt", "distid:another",
                     "-in", "input", "-sigfile", "sig.der", cwd=workdir)  # fmt: skip
    assert other.returncode != 0


def test_the_service_verifies_what_openssl_signs(workdir: Path) -> None:
    public = _openssl("pkey", "-in", "key.pem", "-pubout", "-outform", "DER", cwd=workdir).stdout
    assert public.startswith(SPKI_PREFIX)
    key = SM2Key.from_jwk(
        {"kty": "EC", "crv": "SM2", "x": _b64(public[-64:-32]), "y": _b64(public[-32:])}
    )
    header = {
        "alg": "SM2SM3", "kid": key.thumbprint(), "typ": "ehr-exchange+jws", "b64": False,
        "crit": ["b64"], "iss": "sichuan", "aud": "chongqing", "iat": NOW, "exp": NOW + 300,
        "jti": "made-by-openssl", "htm": "POST", "htu": URL,
    }  # fmt: skip
    encoded = _b64(jsonio.dumps(header))
    (workdir / "input").write_bytes(encoded.encode() + b"." + BODY)
    made = _openssl("pkeyutl", "-sign", "-inkey", "key.pem", "-rawin", "-digest", "sm3",
                    "-pkeyopt", f"distid:{DEFAULT_ID.decode()}", "-in", "input",
                    "-out", "sig.der", cwd=workdir)  # fmt: skip
    assert made.returncode == 0, made
    r, s = decode_dss_signature((workdir / "sig.der").read_bytes())
    signature = f"{encoded}..{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def check(body: bytes) -> Envelope:
        return verify(body, signature, key_for=lambda iss, kid: key, audience="chongqing",
                      htm="POST", htu=URL, now=NOW + 5)  # fmt: skip

    assert check(BODY).jti == "made-by-openssl"
    with pytest.raises(EnvelopeError) as refused:
        check(BODY.replace(b"urn:x", b"urn:y"))
    assert refused.value.reason == "bad-signature"
