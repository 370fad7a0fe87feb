"""The two cryptographic suites side by side, in one process (docs/architecture.md §10:
ratios measured in one run): sealing and opening a resident ID number and a 16 KiB
message with AES-256-GCM and SM4-GCM, blind tokens by HMAC-SHA-256 and HMAC-SM3,
and audit chain links by SHA-256 and SM3. Prints figures; asserts nothing."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ehr_service.security.ciphers import AES_GCM, HMAC_SHA256, HMAC_SM3, SM4_GCM
from ehr_service.security.fieldcrypto import Keyring
from ehr_service.storage.audit import chain_hash

SECONDS = float(os.environ.get("EHR_BENCH_CRYPTO_SECONDS", "0.5"))  # per measurement
NUMBER = "50010119900307123X"
MESSAGE = os.urandom(16 * 1024)
EVENT = b'{"resourceType":"AuditEvent"' + b"x" * 1000 + b"}"


def _rate(work: Callable[[], object]) -> float:
    """Operations per second over about SECONDS (after a short warm-up)."""
    for _ in range(200):
        work()
    count, started = 0, time.perf_counter()
    while True:
        for _ in range(500):
            work()
        count += 500
        elapsed = time.perf_counter() - started
        if elapsed >= SECONDS:
            return count / elapsed


def _keyring(folder: Path, cipher: str) -> Keyring:
    keyring = Keyring.load_or_create(folder / f"{cipher}.json", cipher)
    keyring.refresh = lambda force=False: None  # type: ignore[method-assign] # no file checks
    return keyring


def run() -> list[dict[str, Any]]:
    folder = Path(tempfile.mkdtemp())
    rings = {c: _keyring(folder, c) for c in (AES_GCM, SM4_GCM)}
    sealed = {c: k.seal(NUMBER, "Patient/p1") for c, k in rings.items()}
    documents = {c: k.seal_bytes(MESSAGE, "exchange-message:x/1") for c, k in rings.items()}
    pairs: list[tuple[str, Callable[[], object], Callable[[], object]]] = [
        ("seal ID number", lambda: rings[AES_GCM].seal(NUMBER, "Patient/p1"),
         lambda: rings[SM4_GCM].seal(NUMBER, "Patient/p1")),
        ("open ID number", lambda: rings[AES_GCM].open(sealed[AES_GCM], "Patient/p1"),
         lambda: rings[SM4_GCM].open(sealed[SM4_GCM], "Patient/p1")),
        ("seal 16 KiB message", lambda: rings[AES_GCM].seal_bytes(MESSAGE, "exchange-message:x/1"),
         lambda: rings[SM4_GCM].seal_bytes(MESSAGE, "exchange-message:x/1")),
        ("open 16 KiB message",
         lambda: rings[AES_GCM].open_bytes(documents[AES_GCM], "exchange-message:x/1"),
         lambda: rings[SM4_GCM].open_bytes(documents[SM4_GCM], "exchange-message:x/1")),
        ("blind token", lambda: rings[AES_GCM].blind("resident-id-number", NUMBER, HMAC_SHA256),
         lambda: rings[AES_GCM].blind("resident-id-number", NUMBER, HMAC_SM3)),
        ("audit chain link 1 KiB", lambda: chain_hash("0" * 64, 1, EVENT, "sha256"),
         lambda: chain_hash("0" * 64, 1, EVENT, "sm3")),
    ]  # fmt: skip
    rows = []
    for name, international, national in pairs:
        ours, theirs = _rate(international), _rate(national)
        rows.append({"operation": name, "international_per_s": ours, "national_per_s": theirs,
                     "national_over_international": theirs / ours})  # fmt: skip
    return rows


if __name__ == "__main__":
    for row in run():
        print(row)
