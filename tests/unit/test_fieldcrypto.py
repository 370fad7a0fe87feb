"""Field keys: generated on first run with owner-only permissions, seals bound to
their record, blind tokens keyed, rotation keeps old seals readable."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from ehr_service.security.fieldcrypto import Keyring, SealError


def test_first_run_creates_an_owner_only_key_file(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "field-keys.json"
    keyring = Keyring.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = Keyring.load_or_create(path)
    assert again.blind("p", "v") == keyring.blind("p", "v")
    assert again.active.kid == keyring.active.kid


def test_blind_tokens_are_keyed(tmp_path: Path) -> None:
    one = Keyring.load_or_create(tmp_path / "a.json")
    two = Keyring.load_or_create(tmp_path / "b.json")
    assert one.blind("id", "x") == one.blind("id", "x")
    assert one.blind("id", "x") != two.blind("id", "x")
    assert one.blind("id", "x") != one.blind("other", "x")


def test_seal_opens_only_for_its_record(tmp_path: Path) -> None:
    keyring = Keyring.load_or_create(tmp_path / "k.json")
    sealed = keyring.seal("50010119900307123X", "Patient/a")
    assert "50010119900307123X" not in sealed
    assert keyring.key_id_of(sealed) == keyring.active.kid
    assert keyring.open(sealed, "Patient/a") == "50010119900307123X"
    with pytest.raises(SealError):
        keyring.open(sealed, "Patient/b")
    tampered = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    with pytest.raises(SealError):
        keyring.open(tampered, "Patient/a")


def test_rotation_keeps_old_seals_readable_and_persists(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    keyring = Keyring.load_or_create(path)
    old = keyring.seal("secret", "r")
    new_key = keyring.rotate()
    assert keyring.active.kid == new_key.kid != keyring.key_id_of(old)
    assert keyring.key_id_of(keyring.seal("secret", "r")) == new_key.kid
    reloaded = Keyring.load(path)
    assert reloaded.open(old, "r") == "secret"
    assert reloaded.active.kid == new_key.kid
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
