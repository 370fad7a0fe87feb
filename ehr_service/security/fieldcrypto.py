"""Field-level cryptography for values that must never be stored in plaintext.

Two kinds of key, kept in one key file under the data directory (created on first
run, owner-only permissions) or in a file named by ``EHR_FIELD_KEYS_FILE``:

- a **blind-index key**: HMAC-SHA256 of a normalised value gives a token that
  equality search and unique constraints can use without revealing the value;
- **data keys**: AES-256-GCM (an AEAD cipher) encrypts the value itself. Each
  ciphertext names the key id that sealed it, so keys rotate: a new key seals new
  values and ``ehr-service keys rotate-data-key`` re-seals the old ones.

Sealed form: ``v1.<key id>.<base64url(nonce | ciphertext | tag)>``. The
associated data binds a ciphertext to the record it belongs to.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ehr_service.fhir import jsonio

_NONCE_BYTES = 12
_VERSION = "v1"
# How often a running process looks for a rotated key file (seconds).
REFRESH_SECONDS = 5.0


class SealError(ValueError):
    """A sealed value that cannot be opened (unknown key, altered, wrong record)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class DataKey:
    kid: str
    key: bytes
    created: str
    active: bool

    def as_json(self) -> dict[str, object]:
        return {
            "kid": self.kid,
            "key": _b64(self.key),
            "created": self.created,
            "active": self.active,
        }


def _new_data_key() -> DataKey:
    key = AESGCM.generate_key(bit_length=256)
    kid = hashlib.sha256(key).hexdigest()[:16]  # names the key without revealing it
    return DataKey(kid, key, datetime.now(UTC).isoformat(timespec="seconds"), True)


def write_private(path: Path, content: bytes) -> None:
    """Write a file only its owner can read, atomically (no half-written key file)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(path.name + f".{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, content)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)


class Keyring:
    """The blind-index key and the data keys, loaded once per process."""

    def __init__(self, path: Path, blind_key: bytes, data_keys: list[DataKey]) -> None:
        self.path = path
        self._blind_key = blind_key
        self._keys = {k.kid: k for k in data_keys}
        self._lock = threading.Lock()
        self._checked = time.monotonic()
        self._mtime = self._file_mtime()
        self.created = False  # made by this process just now (first run)

    def _file_mtime(self) -> float | None:
        try:
            return self.path.stat().st_mtime
        except OSError:
            return None

    def refresh(self, *, force: bool = False) -> None:
        """Pick up a key file rotated by another process (checked every few seconds)."""
        now = time.monotonic()
        if not force and now - self._checked < REFRESH_SECONDS:
            return
        self._checked = now
        mtime = self._file_mtime()
        if mtime is None or (mtime == self._mtime and not force):
            return
        reloaded = Keyring.load(self.path)
        if reloaded._blind_key != self._blind_key:
            raise ValueError(f"{self.path.name}: the blind-index key changed; refusing to use it")
        with self._lock:
            self._keys = reloaded._keys
            self._mtime = mtime

    # -- loading and saving ---------------------------------------------------------
    @classmethod
    def load_or_create(cls, path: Path) -> Keyring:
        """Load the key file; create it with fresh keys on first run."""
        if not path.exists():
            fresh = cls(path, secrets.token_bytes(32), [_new_data_key()])
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # another process created it first: use theirs
                return cls.load(path)
            except FileNotFoundError:
                path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                return cls.load_or_create(path)
            try:
                os.write(fd, fresh._serialise())
                os.fsync(fd)
            finally:
                os.close(fd)
            fresh.created = True
            return fresh
        return cls.load(path)

    @classmethod
    def load(cls, path: Path) -> Keyring:
        document = jsonio.loads(path.read_bytes())
        keys = [
            DataKey(k["kid"], _unb64(k["key"]), k["created"], bool(k["active"]))
            for k in document["data_keys"]
        ]
        if sum(1 for k in keys if k.active) != 1:
            raise ValueError(f"{path.name}: exactly one data key must be active")
        return cls(path, _unb64(document["blind_index_key"]), keys)

    def _serialise(self) -> bytes:
        return jsonio.dumps(
            {
                "blind_index_key": _b64(self._blind_key),
                "data_keys": [k.as_json() for k in self._keys.values()],
            },
            option=orjson.OPT_INDENT_2,
        )

    def rotate(self) -> DataKey:
        """Add a new active data key (the old ones stay, to open what they sealed)."""
        with self._lock:
            new = _new_data_key()
            keys = {kid: DataKey(k.kid, k.key, k.created, False) for kid, k in self._keys.items()}
            keys[new.kid] = new
            self._keys = keys
            write_private(self.path, self._serialise())
            self._mtime = self._file_mtime()
            return new

    # -- use --------------------------------------------------------------------------
    @property
    def active(self) -> DataKey:
        return next(k for k in self._keys.values() if k.active)

    def key_ids(self) -> list[tuple[str, str, bool]]:
        return [(k.kid, k.created, k.active) for k in self._keys.values()]

    def blind(self, purpose: str, value: str) -> str:
        """A keyed, deterministic token for ``value``: equal values, equal tokens."""
        mac = hmac.new(self._blind_key, f"{purpose}\x00{value}".encode(), hashlib.sha256)
        return _b64(mac.digest())

    def seal(self, plaintext: str, associated: str) -> str:
        self.refresh()
        key = self.active
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = AESGCM(key.key).encrypt(nonce, plaintext.encode(), associated.encode())
        return f"{_VERSION}.{key.kid}.{_b64(nonce + sealed)}"

    def seal_bytes(self, plaintext: bytes, associated: str) -> bytes:
        """Seal a document (e.g. a message's exact bytes) in the binary form
        ``<key id>.<nonce | ciphertext | tag>``."""
        self.refresh()
        key = self.active
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = AESGCM(key.key).encrypt(nonce, plaintext, associated.encode())
        return key.kid.encode() + b"." + nonce + sealed

    def open_bytes(self, sealed: bytes, associated: str) -> bytes:
        kid, dot, raw = sealed.partition(b".")
        key = self._keys.get(kid.decode("ascii", "replace")) if dot else None
        if dot and key is None:
            self.refresh(force=True)
            key = self._keys.get(kid.decode("ascii", "replace"))
        if key is None:
            raise SealError("sealed with an unknown key")
        try:
            return AESGCM(key.key).decrypt(
                raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], associated.encode()
            )
        except (InvalidTag, ValueError):
            raise SealError("altered, or sealed for another record") from None

    def key_id_of(self, sealed: str) -> str | None:
        parts = sealed.split(".")
        return parts[1] if len(parts) == 3 and parts[0] == _VERSION else None

    def open(self, sealed: str, associated: str) -> str:
        parts = sealed.split(".")
        if len(parts) != 3 or parts[0] != _VERSION:
            raise SealError("not a sealed value")
        key = self._keys.get(parts[1])
        if key is None:
            self.refresh(force=True)
            key = self._keys.get(parts[1])
        if key is None:
            raise SealError("sealed with an unknown key")
        try:
            raw = _unb64(parts[2])
            opened = AESGCM(key.key).decrypt(
                raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], associated.encode()
            )
        except (InvalidTag, ValueError):
            raise SealError("altered, or sealed for another record") from None
        return opened.decode()
