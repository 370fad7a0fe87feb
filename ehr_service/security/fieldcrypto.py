"""Field-level cryptography for values that must never be stored in plaintext.

Two kinds of key, kept in one key file under the data directory (created on first
run, owner-only permissions) or in a file named by ``EHR_FIELD_KEYS_FILE``:

- a **blind-index key**: a keyed MAC of a normalised value (HMAC-SHA-256, or
  HMAC-SM3 under a key derived from it: ``security/ciphers.py``) gives a token that
  equality search and unique constraints can use without revealing the value;
- **data keys**, each of one AEAD cipher (AES-256-GCM, or SM4-GCM in the national
  suite), encrypt the value itself. Each ciphertext names the key that sealed it
  (and the key its cipher), so keys rotate, across suites too: a new key seals new
  values and ``ehr-service keys rotate-data-key`` re-seals the old ones.

Sealed forms (the associated data binds a ciphertext to the record it belongs to):

- AES-256-GCM: ``v1.<key id>.<base64url(nonce | ciphertext | tag)>`` (text) and
  ``<key id>.<nonce | ciphertext | tag>`` (bytes), as before the national suite;
- SM4-GCM: ``v2.SM4GCM.<key id>.<base64url(nonce | ciphertext | tag)>`` and
  ``SM4GCM:<key id>.<nonce | ciphertext | tag>``; a 12-byte nonce, a 16-byte tag.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson

from ehr_service.fhir import jsonio
from ehr_service.security import ciphers
from ehr_service.security.ciphers import AES_GCM, HMAC_SHA256, NONCE_BYTES, UnopenableError

_VERSION = "v1"  # AES-256-GCM, the form every earlier release wrote
_VERSION_NAMED = "v2"  # names its cipher
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
    cipher: str = AES_GCM  # key files without the field are all AES-256-GCM

    def as_json(self) -> dict[str, object]:
        return {
            "kid": self.kid,
            "key": _b64(self.key),
            "created": self.created,
            "active": self.active,
            "cipher": self.cipher,
        }


def _new_data_key(cipher: str = AES_GCM) -> DataKey:
    key = secrets.token_bytes(ciphers.KEY_BYTES[cipher])
    if cipher == AES_GCM:
        kid = hashlib.sha256(key).hexdigest()[:16]  # names the key without revealing it
    else:
        kid = ciphers.digest(ciphers.SM3, key).hex()[:16]
    return DataKey(kid, key, datetime.now(UTC).isoformat(timespec="seconds"), True, cipher)


def _data_key(k: dict[str, object]) -> DataKey:
    cipher = str(k.get("cipher", AES_GCM))
    key = _unb64(str(k["key"]))
    if cipher not in ciphers.CIPHERS or len(key) != ciphers.KEY_BYTES[cipher]:
        raise ValueError(f"data key {k['kid']}: not a {cipher} key")
    return DataKey(str(k["kid"]), key, str(k["created"]), bool(k["active"]), cipher)


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
        self._blind_keys: dict[str, bytes] = {}  # per scheme, derived once
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
    def load_or_create(cls, path: Path, cipher: str = AES_GCM) -> Keyring:
        """Load the key file; create it with fresh keys on first run (the data key of
        ``cipher``)."""
        if not path.exists():
            fresh = cls(path, secrets.token_bytes(32), [_new_data_key(cipher)])
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # another process created it first: use theirs
                return cls.load(path)
            except FileNotFoundError:
                path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                return cls.load_or_create(path, cipher)
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
        keys = [_data_key(k) for k in document["data_keys"]]
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

    def rotate(self, cipher: str = AES_GCM) -> DataKey:
        """Add a new active data key of ``cipher`` (the old ones stay, to open what
        they sealed)."""
        with self._lock:
            new = _new_data_key(cipher)
            keys = {
                kid: DataKey(k.kid, k.key, k.created, False, k.cipher)
                for kid, k in self._keys.items()
            }
            keys[new.kid] = new
            self._keys = keys
            write_private(self.path, self._serialise())
            self._mtime = self._file_mtime()
            return new

    # -- use --------------------------------------------------------------------------
    @property
    def active(self) -> DataKey:
        return next(k for k in self._keys.values() if k.active)

    def key_ids(self) -> list[tuple[str, str, bool, str]]:
        return [(k.kid, k.created, k.active, k.cipher) for k in self._keys.values()]

    def blind(self, purpose: str, value: str, scheme: str = HMAC_SHA256) -> str:
        """A keyed, deterministic token for ``value``: equal values, equal tokens."""
        key = self._blind_keys.get(scheme)
        if key is None:
            key = self._blind_keys[scheme] = ciphers.blind_key_for(scheme, self._blind_key)
        return _b64(ciphers.mac(scheme, key, f"{purpose}\x00{value}".encode()))

    def _key(self, kid: str) -> DataKey | None:
        key = self._keys.get(kid)
        if key is None:  # sealed by a key made since this process loaded the file
            self.refresh(force=True)
            key = self._keys.get(kid)
        return key

    def _sealed_raw(self, key: DataKey, plaintext: bytes, associated: str) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce + ciphers.encrypt(key.cipher, key.key, nonce, plaintext, associated.encode())

    def _opened_raw(self, key: DataKey | None, cipher: str, raw: bytes, associated: str) -> bytes:
        if key is None:
            raise SealError("sealed with an unknown key")
        if key.cipher != cipher:  # a key serves one cipher only
            raise SealError("sealed with a cipher its key is not for")
        try:
            return ciphers.decrypt(
                cipher, key.key, raw[:NONCE_BYTES], raw[NONCE_BYTES:], associated.encode()
            )
        except UnopenableError:
            raise SealError("altered, or sealed for another record") from None

    def seal(self, plaintext: str, associated: str) -> str:
        self.refresh()
        key = self.active
        sealed = _b64(self._sealed_raw(key, plaintext.encode(), associated))
        if key.cipher == AES_GCM:
            return f"{_VERSION}.{key.kid}.{sealed}"
        return f"{_VERSION_NAMED}.{key.cipher}.{key.kid}.{sealed}"

    def seal_bytes(self, plaintext: bytes, associated: str) -> bytes:
        """Seal a document (e.g. a message's exact bytes) in the binary form
        ``[<cipher>:]<key id>.<nonce | ciphertext | tag>``."""
        self.refresh()
        key = self.active
        named = b"" if key.cipher == AES_GCM else key.cipher.encode() + b":"
        return named + key.kid.encode() + b"." + self._sealed_raw(key, plaintext, associated)

    @staticmethod
    def _bytes_header(sealed: bytes) -> tuple[str, str, bytes] | None:
        """(cipher, key id, raw) of a sealed document, None when it is not one."""
        head, dot, raw = sealed.partition(b".")
        if not dot or len(head) > 64:
            return None
        cipher, colon, kid = head.decode("ascii", "replace").rpartition(":")
        return (cipher if colon else AES_GCM), kid, raw

    def open_bytes(self, sealed: bytes, associated: str) -> bytes:
        header = self._bytes_header(sealed)
        if header is None:
            raise SealError("sealed with an unknown key")
        cipher, kid, raw = header
        return self._opened_raw(self._key(kid), cipher, raw, associated)

    def key_id_of_bytes(self, sealed: bytes) -> str | None:
        header = self._bytes_header(sealed)
        return header[1] if header is not None else None

    @staticmethod
    def _text_header(sealed: str) -> tuple[str, str, str] | None:
        parts = sealed.split(".")
        if len(parts) == 3 and parts[0] == _VERSION:
            return AES_GCM, parts[1], parts[2]
        if len(parts) == 4 and parts[0] == _VERSION_NAMED and parts[1] in ciphers.CIPHERS:
            return parts[1], parts[2], parts[3]
        return None

    def key_id_of(self, sealed: str) -> str | None:
        header = self._text_header(sealed)
        return header[1] if header is not None else None

    def open(self, sealed: str, associated: str) -> str:
        header = self._text_header(sealed)
        if header is None:
            raise SealError("not a sealed value")
        cipher, kid, text = header
        try:
            raw = _unb64(text)
        except ValueError:
            raise SealError("altered, or sealed for another record") from None
        return self._opened_raw(self._key(kid), cipher, raw, associated).decode()
