"""SM2 with SM3 (security/sm2.py) against the standards' own examples: SM3 of
GB/T 32905-2016 Annex A, and the SM2 signature example of GM/T 0003.5-2012 /
GB/T 32918.5-2017 Annex A on the recommended curve (the library draws its own k,
so the published signature is verified and the published key signs afresh)."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ehr_service.exchange.envelope import EnvelopeError, sign, verify
from ehr_service.security import sm2
from ehr_service.security.sm2 import SM2Key, SM2KeyError

# GM/T 0003.5-2012 Annex A (= GB/T 32918.5-2017 Annex A): the signature example
D = bytes.fromhex("3945208F7B2144B13F36E38AC6D39F95889393692860B51A42FB81EF4DF7C5B8")
XA = bytes.fromhex("09F9DF311E5421A150DD7D161E4BC5C672179FAD1833FC076BB08FF356F35020")
YA = bytes.fromhex("CCEA490CE26775A52DC6EA718CC1AA600AED05FBF35E084A6632F6072DA9AD13")
MESSAGE = b"message digest"
E = bytes.fromhex("F0B43E94BA45ACCAACE692ED534382EB17E6AB5A19CE7B31F4486FDFC0D28640")
R = bytes.fromhex("F5A03B0648D2C4630EEAC513E1BB81A15944DA3827D5B74143AC7EACEEE720B3")
S = bytes.fromhex("B1B6AA29DF212FD8763182BC0D421CA1BB9038FD1F7F42D4840B69C485BBC1AA")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_sm3_known_answers() -> None:
    assert sm2.sm3(b"abc").hex() == (
        "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
    )
    assert sm2.sm3(b"abcd" * 16).hex() == (
        "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732"
    )


def test_the_standard_example_e_and_signature() -> None:
    # e = SM3(Z_A || M) with the default identifier, as the annex computes it
    assert sm2.sm3(sm2.z_a(XA + YA, b"1234567812345678") + MESSAGE) == E
    published = SM2Key(XA, YA)
    assert published.verify(MESSAGE, R + S)
    # the library's own verifier agrees on the DER form of the same signature
    from gmssl_pyx import sm2_verify

    der = encode_dss_signature(int.from_bytes(R, "big"), int.from_bytes(S, "big"))
    assert sm2_verify(XA + YA, MESSAGE, der, signer_id=b"1234567812345678")
    # one bit of the message, the signature or the identifier changes: refused
    assert not published.verify(b"message digesT", R + S)
    assert not published.verify(MESSAGE, R + bytes([S[0] ^ 1]) + S[1:])
    assert not published.verify(MESSAGE, R + S, b"1234567812345679")


def test_the_published_private_key_signs_what_its_public_key_verifies() -> None:
    key = SM2Key(XA, YA, D)
    signature = key.sign(MESSAGE)
    assert len(signature) == 64 and signature != R + S  # a fresh k each time
    assert key.public().verify(MESSAGE, signature)
    assert key.sign(MESSAGE) != signature
    other = SM2Key.generate()
    assert not other.public().verify(MESSAGE, signature)


@pytest.mark.parametrize(
    "signature",
    [b"", b"\x00" * 64, R + b"\x00" * 32, b"\xff" * 64, (R + S)[:63], R + S + b"\x00"],
)
def test_out_of_range_signatures_are_refused(signature: bytes) -> None:
    assert not SM2Key(XA, YA).verify(MESSAGE, signature)


def test_jwk_round_trip_and_thumbprint() -> None:
    key = SM2Key(XA, YA, D)
    jwk = key.as_dict(private=True)
    assert jwk == {"kty": "EC", "crv": "SM2", "x": _b64(XA), "y": _b64(YA), "d": _b64(D)}
    assert SM2Key.from_jwk(jwk) == key
    assert "d" not in key.as_dict()
    # RFC 7638: crv, kty, x, y in that order, no spaces
    canonical = f'{{"crv":"SM2","kty":"EC","x":"{_b64(XA)}","y":"{_b64(YA)}"}}'.encode()
    assert key.thumbprint() == _b64(sm2.hashlib.sha256(canonical).digest())


@pytest.mark.parametrize(
    "change",
    [
        {"crv": "P-256"},
        {"kty": "OKP"},
        {"x": _b64(XA[:31])},
        {"y": _b64(bytes([YA[0] ^ 1]) + YA[1:])},  # off the curve
        {"x": 5},
        {"x": _b64(XA) + "=="},
        {"x": "not*base64"},
        {"d": _b64(b"\x00" * 32)},
        {"d": _b64(b"\xff" * 32)},
        {"d": _b64(D[:16])},
    ],
)
def test_bad_jwks_are_refused(change: dict[str, Any]) -> None:
    jwk = {**SM2Key(XA, YA, D).as_dict(private=True), **change}
    with pytest.raises(SM2KeyError):
        SM2Key.from_jwk(jwk)


def test_a_public_key_cannot_sign() -> None:
    with pytest.raises(SM2KeyError):
        SM2Key(XA, YA).sign(MESSAGE)


URL = "https://ehr.sc.example/exchange/v1/bundles"
BODY = b'{"resourceType":"Bundle","type":"collection","entry":[]}'


def _envelope(key: SM2Key, **changes: Any) -> str:
    options: dict[str, Any] = {
        "kid": key.thumbprint(), "alg": "SM2SM3", "iss": "chongqing", "aud": "sichuan",
        "htm": "POST", "htu": URL, "now": 1_800_000_000,
    }  # fmt: skip
    options.update(changes)
    return sign(BODY, key, **options)


def _check(signature: str, key: SM2Key, body: bytes = BODY, **changes: Any) -> Any:
    options: dict[str, Any] = {
        "key_for": lambda iss, kid: key.public() if kid == key.thumbprint() else None,
        "audience": "sichuan", "htm": "POST", "htu": URL, "now": 1_800_000_010,
    }  # fmt: skip
    options.update(changes)
    return verify(body, signature, **options)


def test_the_envelope_signs_and_verifies_with_sm2() -> None:
    key = SM2Key.generate()
    signature = _envelope(key)
    header = sm2.jsonio.loads(base64.urlsafe_b64decode(signature.split(".")[0] + "=="))
    assert header["alg"] == "SM2SM3" and header["b64"] is False and header["crit"] == ["b64"]
    assert _check(signature, key).alg == "SM2SM3"
    for reason, body, changes in [
        ("bad-signature", BODY + b" ", {}),
        ("bad-signature", BODY, {"sm2_id": b"another-identity"}),
        ("algorithm", BODY, {"algorithms": ("ES256",)}),
    ]:
        with pytest.raises(EnvelopeError) as refused:
            _check(signature, key, body, **changes)
        assert refused.value.reason == reason
    # the header names SM2SM3 but the key is another's; an ES256 header with an SM2 key
    forged = _envelope(SM2Key.generate(), kid=key.thumbprint())
    with pytest.raises(EnvelopeError, match="does not match"):
        _check(forged, key)
    with pytest.raises(ValueError):
        _envelope(key, alg="ES256")


def test_a_signature_of_another_encoding_is_refused() -> None:
    key = SM2Key.generate()
    header, _, raw = _envelope(key).split(".")
    assert sm2.verify_detached(f"{header}..{raw}", BODY, key.public())
    assert not sm2.verify_detached(f"{header}..{raw}=", BODY, key.public())
    assert not sm2.verify_detached(f"{header}.{_b64(BODY)}.{raw}", BODY, key.public())
    unprotected = _b64(b'{"alg":"SM2SM3","b64":false}')  # b64 false without crit
    bare = sm2.sign_detached({"alg": "SM2SM3", "b64": False}, BODY, key)
    assert bare.split(".")[0] == unprotected
    assert not sm2.verify_detached(bare, BODY, key.public())
