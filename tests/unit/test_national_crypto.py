"""The national cryptographic suite: SM3, HMAC-SM3 and SM4-GCM against the standards'
own examples and the OpenSSL 3 command line; data keys of either cipher side by side."""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

import orjson
import pytest

from ehr_service.security import ciphers
from ehr_service.security.ciphers import AES_GCM, HMAC_SHA256, HMAC_SM3, SM3, SM4_GCM
from ehr_service.security.fieldcrypto import Keyring, SealError
from ehr_service.storage.audit import chain_hash

OPENSSL = shutil.which("openssl")


def _openssl(*args: str, data: bytes = b"") -> bytes:
    if OPENSSL is None:
        pytest.skip("no openssl command line on this machine")
    done = subprocess.run([OPENSSL, *args], input=data, capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"this openssl cannot: openssl {' '.join(args)}: {done.stderr.decode()[:200]}")
    return done.stdout


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# -- known answers: the standards' own examples ------------------------------------------
def test_sm3_examples_of_gb_t_32905() -> None:
    assert ciphers.digest(SM3, b"abc").hex() == (
        "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
    )
    assert ciphers.digest(SM3, b"abcd" * 16).hex() == (  # the 512-bit example
        "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732"
    )


def test_sm4_example_of_gb_t_32907() -> None:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    key = bytes.fromhex("0123456789abcdeffedcba9876543210")
    encryptor = Cipher(algorithms.SM4(key), modes.ECB()).encryptor()
    assert (encryptor.update(key) + encryptor.finalize()).hex() == (
        "681edf34d206965e86b3e94f536e4246"
    )


def test_sm4_gcm_example_of_rfc_8998() -> None:
    key = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
    nonce = bytes.fromhex("00001234567800000000ABCD")
    associated = bytes.fromhex("FEEDFACEDEADBEEFFEEDFACEDEADBEEFABADDAD2")
    plaintext = bytes.fromhex(
        "AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBBCCCCCCCCCCCCCCCCDDDDDDDDDDDDDDDD"
        "EEEEEEEEEEEEEEEEFFFFFFFFFFFFFFFFEEEEEEEEEEEEEEEEAAAAAAAAAAAAAAAA"
    )
    sealed = ciphers.encrypt(SM4_GCM, key, nonce, plaintext, associated)
    assert sealed[:-16].hex().upper() == (
        "17F399F08C67D5EE19D0DC9969C4BB7D5FD46FD3756489069157B282BB200735"
        "D82710CA5C22F0CCFA7CBF93D496AC15A56834CBCF98C397B4024A2691233B8D"
    )
    assert sealed[-16:].hex().upper() == "83DE3541E4C2B58177E065A9BF7B62EC"
    assert ciphers.decrypt(SM4_GCM, key, nonce, sealed, associated) == plaintext
    for altered in (sealed[:-1] + bytes([sealed[-1] ^ 1]), bytes([sealed[0] ^ 1]) + sealed[1:]):
        with pytest.raises(ciphers.UnopenableError):
            ciphers.decrypt(SM4_GCM, key, nonce, altered, associated)
    with pytest.raises(ciphers.UnopenableError):
        ciphers.decrypt(SM4_GCM, key, nonce, sealed, associated + b"x")


# -- the OpenSSL 3 command line ------------------------------------------------------------
def test_sm3_and_hmac_sm3_agree_with_openssl() -> None:
    data = "居民健康档案 50010119900307123X".encode()
    out = _openssl("dgst", "-sm3", "-r", data=data).split()[0].decode()
    assert out == ciphers.digest(SM3, data).hex()
    key = bytes(range(32))
    mac = _openssl("mac", "-digest", "SM3", "-macopt", f"hexkey:{key.hex()}", "HMAC", data=data)
    assert mac.strip().decode().lower() == ciphers.hmac_sm3(key, data).hex()
    # the HMAC of a key longer than the SM3 block (64 bytes) is hashed first (RFC 2104)
    long_key = bytes(range(100))
    mac = _openssl("mac", "-digest", "SM3", "-macopt", f"hexkey:{long_key.hex()}", "HMAC",
                   data=b"abc")  # fmt: skip
    assert mac.strip().decode().lower() == ciphers.mac(HMAC_SM3, long_key, b"abc").hex()


def test_audit_chain_link_under_sm3_is_openssl_sm3_of_its_documented_input() -> None:
    content = b'{"resourceType":"AuditEvent","id":"7"}'
    prev = "ab" * 32
    expected = _openssl("dgst", "-sm3", "-r", data=f"{prev}|7|".encode() + content).split()[0]
    assert chain_hash(prev, 7, content, "sm3") == expected.decode()
    assert chain_hash(prev, 7, content) != chain_hash(prev, 7, content, "sm3")
    with pytest.raises(ValueError, match="unknown chain hash"):
        chain_hash(prev, 7, content, "md5")


def test_a_sealed_id_number_opens_with_openssl_given_the_key_and_layout(tmp_path: Path) -> None:
    """``v2.SM4GCM.<kid>.<b64url(nonce | ciphertext | tag)>``: GCM with a 96-bit nonce
    encrypts with SM4-CTR from the counter block nonce | 00000002 (SP 800-38D §7.1),
    so ``openssl enc -sm4-ctr`` recovers the plaintext (enc has no AEAD modes: the
    tag is checked by the service; see the RFC 8998 vector above for the tag)."""
    keyring = Keyring.load_or_create(tmp_path / "k.json", SM4_GCM)
    sealed = keyring.seal("50010119900307123X", "Patient/p1")
    version, cipher, kid, payload = sealed.split(".")
    assert (version, cipher, kid) == ("v2", "SM4GCM", keyring.active.kid)
    raw = _unb64(payload)
    nonce, body = raw[:12], raw[12:-16]
    key = next(
        _unb64(k["key"])
        for k in orjson.loads((tmp_path / "k.json").read_bytes())["data_keys"]
        if k["kid"] == kid
    )
    counter = (nonce + (2).to_bytes(4, "big")).hex()
    opened = _openssl("enc", "-d", "-sm4-ctr", "-K", key.hex(), "-iv", counter, data=body)
    assert opened == b"50010119900307123X"


def test_a_value_sealed_by_openssl_in_the_layout_has_the_service_s_ciphertext(
    tmp_path: Path,
) -> None:
    keyring = Keyring.load_or_create(tmp_path / "k.json", SM4_GCM)
    key = keyring.active.key
    nonce = bytes(range(12))
    counter = (nonce + (2).to_bytes(4, "big")).hex()
    by_openssl = _openssl("enc", "-sm4-ctr", "-K", key.hex(), "-iv", counter, data=b"x" * 40)
    ours = ciphers.encrypt(SM4_GCM, key, nonce, b"x" * 40, b"Patient/p1")
    assert ours[:-16] == by_openssl


# -- data keys of both ciphers ---------------------------------------------------------------
def test_sm4_seals_name_their_cipher_and_old_aes_seals_still_open(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    keyring = Keyring.load_or_create(path)
    assert keyring.active.cipher == AES_GCM
    old_text = keyring.seal("50010119900307123X", "Patient/a")
    old_bytes = keyring.seal_bytes(b"message bytes", "exchange-message:x/1")
    assert old_text.startswith("v1.") and old_bytes.startswith(keyring.active.kid.encode())
    sm4 = keyring.rotate(SM4_GCM)
    assert len(sm4.key) == 16 and sm4.cipher == SM4_GCM
    new_text = keyring.seal("50010119900307123X", "Patient/a")
    new_bytes = keyring.seal_bytes(b"message bytes", "exchange-message:x/1")
    assert new_text.startswith(f"v2.SM4GCM.{sm4.kid}.")
    assert new_bytes.startswith(f"SM4GCM:{sm4.kid}.".encode())
    reloaded = Keyring.load(path)  # the key file records each key's cipher
    assert [c for *_, c in reloaded.key_ids()] == [AES_GCM, SM4_GCM]
    for text in (old_text, new_text):
        assert reloaded.open(text, "Patient/a") == "50010119900307123X"
        with pytest.raises(SealError):
            reloaded.open(text, "Patient/b")
    for raw in (old_bytes, new_bytes):
        assert reloaded.open_bytes(raw, "exchange-message:x/1") == b"message bytes"
    assert reloaded.key_id_of(new_text) == reloaded.key_id_of_bytes(new_bytes) == sm4.kid
    back = reloaded.rotate(AES_GCM)  # and back to the international suite
    assert reloaded.seal("v", "r").startswith(f"v1.{back.kid}.")


def test_a_seal_naming_another_cipher_than_its_key_s_is_refused(tmp_path: Path) -> None:
    keyring = Keyring.load_or_create(tmp_path / "k.json")
    aes = keyring.seal("secret", "r")
    _, kid, payload = aes.split(".")
    with pytest.raises(SealError, match="cipher"):
        keyring.open(f"v2.SM4GCM.{kid}.{payload}", "r")
    with pytest.raises(SealError):
        keyring.open(f"v2.DES.{kid}.{payload}", "r")
    raw = keyring.seal_bytes(b"doc", "r")
    with pytest.raises(SealError, match="cipher"):
        keyring.open_bytes(b"SM4GCM:" + raw, "r")


def test_a_key_file_with_a_key_of_the_wrong_size_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    Keyring.load_or_create(path, SM4_GCM)
    document = orjson.loads(path.read_bytes())
    document["data_keys"][0]["cipher"] = AES_GCM  # a 16-byte key cannot be AES-256
    path.write_bytes(orjson.dumps(document))
    with pytest.raises(ValueError, match="not a A256GCM key"):
        Keyring.load(path)


def test_hmac_sm3_blind_tokens_use_a_derived_key(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    keyring = Keyring.load_or_create(path)
    blind_key = _unb64(orjson.loads(path.read_bytes())["blind_index_key"])
    sha = keyring.blind("id", "x")
    assert sha == keyring.blind("id", "x", HMAC_SHA256)  # unchanged: old tokens still match
    sm3 = keyring.blind("id", "x", HMAC_SM3)
    assert sm3 != sha
    derived = ciphers.hmac_sm3(blind_key, ciphers.SM3_BLIND_LABEL)
    expected = ciphers.hmac_sm3(derived, b"id\x00x")
    assert _unb64(sm3) == expected
    assert ciphers.hmac_sm3(blind_key, b"id\x00x") != expected  # never the raw key in two MACs


def test_this_build_offers_sm4_gcm() -> None:
    assert ciphers.sm4_gcm_available()
    with pytest.raises(ValueError, match="unknown cryptographic suite"):
        ciphers.suite("quantum")
