"""The exchange envelope: a detached, unencoded (RFC 7797) JWS over the exact bytes.
Interoperability is shown against a JWS built and checked with `cryptography` alone."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from joserfc.jwk import ECKey, OKPKey

from ehr_service.exchange.envelope import EnvelopeError, sign, verify

BODY = b'{"resourceType":"Bundle","type":"transaction","entry":[]}\n'
NOW = 1_800_000_000
URL = "https://ehr.cq.example/exchange/v1/bundles"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.fixture(params=["ES256", "Ed25519"])
def key(request: pytest.FixtureRequest) -> tuple[str, Any]:
    if request.param == "ES256":
        return "ES256", ECKey.generate_key("P-256", private=True, auto_kid=True)
    return "Ed25519", OKPKey.generate_key("Ed25519", private=True, auto_kid=True)


def _signed(alg: str, k: Any, **changes: Any) -> str:
    fields: dict[str, Any] = {
        "kid": k.kid, "alg": alg, "iss": "sichuan", "aud": "chongqing",
        "htm": "POST", "htu": URL, "now": NOW,
    }  # fmt: skip
    fields.update(changes)
    body = fields.pop("body", BODY)
    return sign(body, k, **fields)


def _check(signature: str, k: Any, body: bytes = BODY, **changes: Any) -> Any:
    options: dict[str, Any] = {
        "key_for": lambda iss, kid: k if (iss, kid) == ("sichuan", k.kid) else None,
        "audience": "chongqing", "htm": "POST", "htu": URL, "now": NOW + 10,
    }  # fmt: skip
    options.update(changes)
    return verify(body, signature, **options)


def test_round_trip_and_the_header(key: tuple[str, Any]) -> None:
    alg, k = key
    signature = _signed(alg, k)
    head, payload, _ = signature.split(".")
    assert payload == ""  # detached
    header = orjson.loads(_unb64(head))
    assert header["b64"] is False and header["crit"] == ["b64"]
    assert header["typ"] == "ehr-exchange+jws" and header["exp"] - header["iat"] == 300
    envelope = _check(signature, k)
    assert (envelope.iss, envelope.aud, envelope.htu, envelope.kid) == (
        "sichuan",
        "chongqing",
        URL,
        k.kid,
    )


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"body": BODY.replace(b"[]", b"[ ]")}, "bad-signature"),  # one byte of whitespace
        ({"audience": "beijing"}, "audience"),
        ({"htu": URL + "?x"}, "target"),
        ({"htm": "PUT"}, "target"),
        ({"now": NOW + 3600}, "expired"),
        ({"now": NOW - 3600}, "future"),
        ({"key_for": lambda iss, kid: None}, "unknown-key"),
    ],
)
def test_refusals(key: tuple[str, Any], change: dict[str, Any], reason: str) -> None:
    alg, k = key
    signature = _signed(alg, k)
    change = dict(change)  # the parameters are shared between the key fixtures
    body = change.pop("body", BODY)
    with pytest.raises(EnvelopeError) as refused:
        _check(signature, k, body, **change)
    assert refused.value.reason == reason


def test_malformed_signatures_are_refused(key: tuple[str, Any]) -> None:
    alg, k = key
    full = _signed(alg, k)
    head, _, sig = full.split(".")
    none_header = _b64(orjson.dumps({**orjson.loads(_unb64(head)), "alg": "none"}))
    encoded = _b64(orjson.dumps({**orjson.loads(_unb64(head)), "b64": True}))
    for bad in (
        "",
        "a.b.c",
        f"{head}.{_b64(BODY)}.{sig}",
        f"{none_header}..{sig}",
        f"{encoded}..{sig}",
    ):
        with pytest.raises(EnvelopeError):
            _check(bad, k)


def test_a_longer_lifetime_than_five_minutes_is_refused() -> None:
    k = ECKey.generate_key("P-256", private=True, auto_kid=True)
    head = {"alg": "ES256", "kid": k.kid, "typ": "ehr-exchange+jws", "b64": False, "crit": ["b64"],
            "iss": "sichuan", "aud": "chongqing", "iat": NOW, "exp": NOW + 3600, "jti": "j",
            "htm": "POST", "htu": URL}  # fmt: skip
    signature = _plain_es256(k, head, BODY)
    with pytest.raises(EnvelopeError) as refused:
        _check(signature, k)
    assert refused.value.reason == "lifetime"


def _plain_es256(k: ECKey, header: dict[str, Any], body: bytes) -> str:
    """A detached RFC 7797 JWS made with `cryptography` only (no JOSE library)."""
    protected = _b64(orjson.dumps(header))
    private = k.private_key
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    der = private.sign(protected.encode() + b"." + body, ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    return f"{protected}..{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def test_interoperates_with_a_plain_cryptography_implementation() -> None:
    k = ECKey.generate_key("P-256", private=True, auto_kid=True)
    header = {"alg": "ES256", "kid": k.kid, "typ": "ehr-exchange+jws", "b64": False,
              "crit": ["b64"], "iss": "sichuan", "aud": "chongqing", "iat": NOW,
              "exp": NOW + 300, "jti": "partner-1", "htm": "POST", "htu": URL}  # fmt: skip
    # the partner signs without any JOSE library; we verify
    assert _check(_plain_es256(k, header, BODY), k).jti == "partner-1"
    # we sign; the partner verifies without any JOSE library
    ours = _signed("ES256", k)
    protected, _, raw = ours.split(".")
    signature = _unb64(raw)
    der = encode_dss_signature(
        int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    )
    public = k.public_key
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(der, protected.encode() + b"." + BODY, ec.ECDSA(hashes.SHA256()))
