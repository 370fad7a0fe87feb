"""Files sealed at rest with the data key (docs/architecture.md §9): bulk export output
holds whole records, so it is never on disk in the clear.

A file is a run of records, each ``flag (1 byte) | length (4 bytes, big-endian) |
sealed chunk``, where a chunk is up to ``CHUNK`` bytes of the plaintext sealed
with the keyring's active data key (AES-256-GCM or SM4-GCM, by the suite) in the
keyring's binary form, its associated data naming the file, the chunk's index and
whether it is the last. So a chunk cannot be moved to another file or place, and a
file cut short (no chunk flagged last) or extended is refused, not served in part
as if whole. Chunks are sealed with a fresh random nonce each.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import BinaryIO

from ehr_service.security.fieldcrypto import Keyring, SealError

CHUNK = 1 << 20
_HEAD = struct.Struct(">BI")
_LAST = 1


def _associated(name: str, index: int, flag: int) -> str:
    return f"sealed-file\x00{name}\x00{index}\x00{flag}"


class SealedWriter:
    """Buffers what is written and seals it chunk by chunk into ``handle``;
    ``close`` seals the last chunk (possibly empty), which a reader requires."""

    def __init__(self, handle: BinaryIO, keyring: Keyring, name: str, chunk: int = CHUNK) -> None:
        self.handle, self.keyring, self.name, self.chunk = handle, keyring, name, chunk
        self._buffer = bytearray()
        self._index = 0
        self._closed = False

    def write(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) > self.chunk:
            self._seal(bytes(self._buffer[: self.chunk]), 0)
            del self._buffer[: self.chunk]

    def close(self) -> None:
        if not self._closed:
            self._seal(bytes(self._buffer), _LAST)
            self._buffer.clear()
            self._closed = True

    def _seal(self, plaintext: bytes, flag: int) -> None:
        sealed = self.keyring.seal_bytes(plaintext, _associated(self.name, self._index, flag))
        self.handle.write(_HEAD.pack(flag, len(sealed)) + sealed)
        self._index += 1


def chunks(handle: BinaryIO, keyring: Keyring, name: str) -> Iterator[bytes]:
    """The plaintext chunks of a sealed file, in order; SealError if any chunk was
    altered, moved or sealed for another file, or the file was cut short or extended."""
    index = 0
    while True:
        head = handle.read(_HEAD.size)
        if len(head) < _HEAD.size:
            raise SealError("the sealed file is cut short")
        flag, length = _HEAD.unpack(head)
        sealed = handle.read(length)
        if len(sealed) < length or flag not in (0, _LAST):
            raise SealError("the sealed file is cut short or altered")
        yield keyring.open_bytes(sealed, _associated(name, index, flag))
        index += 1
        if flag == _LAST:
            if handle.read(1):
                raise SealError("the sealed file goes on after its last chunk")
            return


def lines(handle: BinaryIO, keyring: Keyring, name: str) -> Iterator[bytes]:
    """The lines of a sealed NDJSON file, without their line ends."""
    rest = b""
    for chunk in chunks(handle, keyring, name):
        rest += chunk
        *whole, rest = rest.split(b"\n")
        yield from whole
    if rest:
        yield rest
