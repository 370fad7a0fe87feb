"""Files sealed at rest in chunks: they read back whole in either suite's cipher,
and a chunk altered, moved, dropped or added, or a file cut short, is refused."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pytest

from ehr_service.security import sealed_files
from ehr_service.security.ciphers import AES_GCM, SM4_GCM, sm4_gcm_available
from ehr_service.security.fieldcrypto import Keyring, SealError

LINES = [b'{"resourceType":"Observation","id":"o%d","status":"final"}' % n for n in range(500)]


def _sealed(keyring: Keyring, name: str = "job/Observation.ndjson", chunk: int = 4096) -> bytes:
    raw = io.BytesIO()
    writer = sealed_files.SealedWriter(raw, keyring, name, chunk=chunk)
    for line in LINES:
        writer.write(line + b"\n")
    writer.close()
    return raw.getvalue()


def _records(data: bytes) -> list[bytes]:
    out, at = [], 0
    while at < len(data):
        _, length = struct.unpack(">BI", data[at : at + 5])
        out.append(data[at : at + 5 + length])
        at += 5 + length
    return out


def _read(keyring: Keyring, data: bytes, name: str = "job/Observation.ndjson") -> list[bytes]:
    return list(sealed_files.lines(io.BytesIO(data), keyring, name))


@pytest.mark.parametrize("cipher", [AES_GCM, SM4_GCM])
def test_a_sealed_file_reads_back_whole(tmp_path: Path, cipher: str) -> None:
    if cipher == SM4_GCM and not sm4_gcm_available():
        pytest.skip("this OpenSSL build has no SM4-GCM")
    keyring = Keyring.load_or_create(tmp_path / "keys.json", cipher)
    data = _sealed(keyring)
    assert len(_records(data)) > 5  # chunked
    assert b"Observation" not in data
    assert _read(keyring, data) == LINES


def test_tampering_is_refused(tmp_path: Path) -> None:
    keyring = Keyring.load_or_create(tmp_path / "keys.json")
    data = _sealed(keyring)
    records = _records(data)
    flipped = bytearray(data)
    flipped[len(records[0]) + 40] ^= 1
    attempts = {
        "altered": bytes(flipped),
        "cut short": b"".join(records[:-1]),
        "a chunk dropped": b"".join(records[:1] + records[2:]),
        "chunks swapped": b"".join([records[1], records[0], *records[2:]]),
        "extended": data + records[0],
        "truncated mid-record": data[:-3],
    }
    for what, forged in attempts.items():
        with pytest.raises(SealError):
            _read(keyring, forged)
            pytest.fail(f"{what}: read back")
    with pytest.raises(SealError):  # sealed for another file
        _read(keyring, data, name="other-job/Observation.ndjson")


def test_an_empty_file_is_one_last_chunk(tmp_path: Path) -> None:
    keyring = Keyring.load_or_create(tmp_path / "keys.json")
    raw = io.BytesIO()
    sealed_files.SealedWriter(raw, keyring, "empty").close()
    assert _read(keyring, raw.getvalue(), "empty") == []
    with pytest.raises(SealError):
        _read(keyring, b"", "empty")
